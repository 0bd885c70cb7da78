"""EmoDB leave one speaker out: the three normalisations, then multitask
against single-task under one of them (issue 23's study).

python launch.py --mode=sweep --config=configs/sweeps/emodb_normalisation.py \
    --config.corpus.root=/path/to/emodb --workdir=runs/emodb_normalisation

The base is `configs/emodb_loso.py` (seven emotions, ten folds of one test
speaker, the CPU-sized trunk). Variants:
  stl_train, stl_speaker, stl_utterance   emotion alone, each data.normalisation;
  mtl_equal, mtl_uncertainty, mtl_uncertainty_revised
                                          emotion + gender under `best`, with
                                          `equal`, `uncertainty` and the weighting
                                          study's best method.
PAIRS compares each normalisation with `train`, and each multitask variant with
the single-task run of the same normalisation, speaker by speaker (mean
difference, wins, Wilcoxon signed-rank p).

Argument (comma-separated): trunk=alexnet|vgg11 (default alexnet),
best=speaker|utterance|train (default speaker), smoke (seconds-long runs on the
synthetic smoke corpus, one holdout split).
"""

from configs import common, emodb_loso

METRICS = (
    "test/ua/emotion",
    "test/wa/emotion",
    "test/macro_f1/emotion",
)
PAIRED_METRIC = "test/ua/emotion"
MTL_METHODS = ("equal", "uncertainty", "uncertainty_revised")


def _arg(arg):
    return common.parse_arg(arg, trunk="alexnet", best="speaker", smoke=False)


def get_config(arg=None):
    a = _arg(arg)
    return emodb_loso.get_config(f"trunk={a.trunk}" + (",smoke" if a.smoke else ""))


def PAIRS(arg=None):  # noqa: N802 (the sweep file's name for it)
    """(variant, baseline) pairs; the multitask ones against `stl_<best>`."""
    best = _arg(arg).best
    return (("stl_speaker", "stl_train"), ("stl_utterance", "stl_train")) + tuple(
        (f"mtl_{name}", f"stl_{best}") for name in MTL_METHODS
    )


def get_sweep(arg=None):
    a = _arg(arg)
    stl = [
        {"variant": f"stl_{mode}", "data.normalisation": mode}
        for mode in ("train", "speaker", "utterance")
    ]
    mtl = [
        {
            "variant": f"mtl_{name}",
            "tasks": "emotion,gender",
            "weighting.name": name,
            "data.normalisation": a.best,
        }
        for name in MTL_METHODS
    ]
    return stl + mtl
