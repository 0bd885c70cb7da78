"""Corpus presets and the paper's experiments, shared by config files.

No defaults live here (configs/default.py holds every field); `parse_arg` is
configs/args.py's, kept here for the config files that call it from here.
"""

from configs import args, default

parse_arg = args.parse_arg  # The config files call it from here.


# Corpus presets for the paper's experiments: (root, val speakers, test speakers,
# tasks of the multitask model). Held-out speakers are one female, one male each.
# A real corpus has no default root: --config.corpus.root names its folder.
CORPUS_PRESETS = {
    "synthetic": (
        "data/synthetic",
        "spk06,spk07",
        "spk08,spk09",
        "emotion,gender,arousal,valence,dominance",
    ),
    "emodb": ("", "08,03", "09,10", "emotion,gender"),
    # Session 5's two speakers; the adapter reads Session1..5 under the root.
    "iemocap": (
        "",
        "Ses05F",
        "Ses05M",
        "emotion,gender,arousal,valence,dominance",
    ),
}


def paper_config(arg, *, trunk: str, multitask: bool):
    """One of the paper's four experiments (AlexNet/VGG, STL/MTL).

    Args:
      arg: config argument: "smoke" and/or "corpus=<name>" (see CORPUS_PRESETS).
      trunk: "alexnet" or "vgg11".
      multitask: emotion plus the corpus's auxiliary tasks with uncertainty
        weighting, or emotion alone.

    Returns:
      The ConfigDict.
    """
    arg = parse_arg(arg, smoke=False, corpus="synthetic")
    if arg.corpus not in CORPUS_PRESETS:
        raise ValueError(
            f"config argument corpus={arg.corpus!r}: "
            f"choose from {sorted(CORPUS_PRESETS)}"
        )
    root, val, test, mtl_tasks = CORPUS_PRESETS[arg.corpus]
    c = default.get_config()
    c.corpus.name, c.corpus.root = arg.corpus, root
    c.split.val_speakers, c.split.test_speakers = val, test
    c.tasks = mtl_tasks if multitask else "emotion"
    c.weighting.name = "uncertainty" if multitask else "equal"
    c.model.name = trunk
    c.model.batch_norm = trunk != "alexnet"  # VGG trains from scratch with BN.
    if arg.smoke:
        default.smoke(c)
        if arg.corpus != "synthetic":
            c.corpus.root = root
            c.split.val_speakers, c.split.test_speakers = val, test
    return c
