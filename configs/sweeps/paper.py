"""The paper's comparison: AlexNet and VGG, single-task vs multitask, seeds.

Four variants (AlexNet-STL, AlexNet-MTL, VGG-STL, VGG-MTL; the multitask ones
with uncertainty weighting) x seeds, on the corpus named by the argument, with
the corpus's protocol: the built-in corpus on its holdout speakers, EmoDB in
5-fold speaker-grouped cross-validation, IEMOCAP leave-one-session-out (each
held-out session's two speakers give validation and test). The table reports
the paper's metrics for emotion (accuracy = WA, macro precision, recall, F1)
and UA, mean ± std over folds and seeds, then MTL vs STL fold by fold and the
t-SNE and Grad-CAM figures of each variant's first run.

python launch.py --mode=sweep --config=configs/sweeps/paper.py:corpus=emodb,cpu \
    --config.corpus.root=/path/to/emodb --workdir=runs/paper_emodb

Argument (comma-separated): corpus=synthetic|emodb|iemocap (configs/common.py
presets; a real corpus needs --config.corpus.root=its folder), seeds=N (default 3),
cpu (CPU-sized models and 1,000 steps; default: the paper's full-width AlexNet
and VGG-11), smoke (seconds-long runs, one seed).
"""

from configs import common

METRICS = (
    "test/wa/emotion",
    "test/macro_precision/emotion",
    "test/macro_recall/emotion",
    "test/macro_f1/emotion",
    "test/ua/emotion",
)
# The paper's names for them.
LABELS = {
    "test/wa/emotion": "accuracy",
    "test/macro_precision/emotion": "precision",
    "test/macro_recall/emotion": "recall",
    "test/macro_f1/emotion": "F1",
    "test/ua/emotion": "UA",
    "step_time_ms": "step ms",
    "relative_step_time": "step time vs alexnet_stl",
}
REFERENCE = {"variant": "alexnet_stl"}
# (variant, baseline) compared model by model on PAIRED_METRIC.
PAIRS = (("alexnet_mtl", "alexnet_stl"), ("vgg_mtl", "vgg_stl"))
PAIRED_METRIC = "test/ua/emotion"
# Each variant's figures (of its first seed and fold) shown under the tables.
FIGURES = ("tsne.png", "gradcam_*.png")

# Corpus -> split protocol of the comparison (holdout uses the preset speakers).
PROTOCOLS = {
    "synthetic": {"split.protocol": "holdout"},
    "emodb": {"split.protocol": "kfold", "split.folds": 5},
    "iemocap": {"split.protocol": "group", "split.within_group": True},
}
# (trunk, width, hidden at width 1) of the paper's models and the CPU-sized ones.
TRUNKS = {
    "alexnet": (("alexnet", 1.0, 4096), ("alexnet", 0.25, 2048)),
    "vgg": (("vgg11", 1.0, 4096), ("vgg11", 0.125, 2048)),
}


def _arg(arg):
    return common.parse_arg(arg, corpus="synthetic", seeds=3, cpu=False, smoke=False)


def get_config(arg=None):
    a = _arg(arg)
    c = common.paper_config(
        f"corpus={a.corpus}" + (",smoke" if a.smoke else ""),
        trunk="alexnet",
        multitask=True,
    )
    for key, value in PROTOCOLS[a.corpus].items():
        section, field = key.split(".")
        c[section][field] = value
    if a.cpu and not a.smoke:
        c.optim.learning_rate, c.optim.warmup_steps = 1e-3, 100
        c.train.num_steps, c.train.log_every = 1_000, 25
        c.train.eval_every = c.train.checkpoint_every = 250
    return c


def get_sweep(arg=None):
    a = _arg(arg)
    mtl_tasks = common.CORPUS_PRESETS[a.corpus][3]
    seeds = range(1 if a.smoke else a.seeds)
    variants = []
    for label, (paper, cpu) in TRUNKS.items():
        name, width, hidden = cpu if a.cpu else paper
        model = {"model.name": name, "model.batch_norm": name != "alexnet"}
        if not a.smoke:
            model.update({"model.width": width, "model.hidden": hidden})
        for kind, tasks, weighting in (
            ("stl", "emotion", "equal"),
            ("mtl", mtl_tasks, "uncertainty"),
        ):
            for seed in seeds:
                variants.append(
                    {
                        "variant": f"{label}_{kind}",
                        **model,
                        "tasks": tasks,
                        "weighting.name": weighting,
                        "seed": seed,
                    }
                )
    return variants
