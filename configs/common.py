"""Helpers shared by config files (argument parsing only; no defaults live here)."""

import ml_collections


def parse_arg(arg, **defaults):
    """Parses a config argument string like "smoke" or "smoke,corpus=emodb".

    Args:
      arg: the text after ":" in `--config=configs/x.py:arg`, or None.
      **defaults: every accepted key with its default value; the value's type is
        used to convert the text (bools accept a bare key as True).

    Returns:
      A ConfigDict of the parsed values.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, text = item.partition("=")
        if key not in defaults:
            raise ValueError(
                f"config argument {key!r}: unknown; choose from {sorted(defaults)}"
            )
        kind = type(defaults[key])
        if kind is bool:
            values[key] = text.lower() not in ("0", "false", "no") if text else True
        else:
            values[key] = kind(text)
    return ml_collections.ConfigDict(values)


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
    from configs import default  # Late import: default imports this module.

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
