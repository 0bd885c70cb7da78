"""Every loss-weighting method on the built-in corpus, the main job's model.

Each method runs at its defaults (LibMTL's). Three methods also run with the
one option that departs from its default: MGDA with Sener & Koltun's `loss+`
gradient normalisation (their code's setting), DB-MTL without its gradient
EMA (`db_beta=0`), and IMTL on the gradients of the shared representation
(`rep_grad=True`, LibMTL's own option); at their defaults these three miss
`equal` on this corpus.

python launch.py --mode=sweep --config=configs/sweeps/weighting.py \
    --workdir=runs/weighting
(":smoke" runs each variant for a few steps; ":seeds=3" runs seeds 0, 1, 2 of
each, the table then giving mean +/- std; ":only=equal+stch+moco" runs those
methods at their defaults and no options; --sweep.print_commands prints one
launch command per variant instead.)
"""

from configs import common, synthetic
from mtl_ser.experiments import sweeps

NAMES = (
    "equal",
    "uncertainty",
    "uncertainty_revised",
    "dwa",
    "rlw",
    "gls",
    "famo",
    "stch",
    "excess_mtl",
    "gradnorm",
    "mgda",
    "pcgrad",
    "cagrad",
    "imtl",
    "nash_mtl",
    "aligned_mtl",
    "db_mtl",
    "graddrop",
    "gradvac",
    "moco",
    "fairgrad",
    "upgrad",
    "modo",
    "sdmgrad",
)

METRICS = (
    "test/ua/emotion",
    "test/macro_f1/emotion",
    "test/ua/gender",
    "test/ccc/arousal",
    "test/ccc/valence",
    "test/ccc/dominance",
)

# Step times are reported relative to this variant.
REFERENCE = {"weighting.name": "equal"}


def _arg(arg):
    a = common.parse_arg(arg, seeds=1, smoke=False, only="")
    unknown = sorted(set(filter(None, a.only.split("+"))) - set(NAMES))
    if unknown:
        raise ValueError(f"config argument only: unknown methods {unknown}")
    return a


def get_config(arg=None):
    return synthetic.get_config("smoke" if _arg(arg).smoke else None)


def get_sweep(arg=None):
    a = _arg(arg)
    seeds = list(range(a.seeds))
    if a.only:
        return sweeps.product(weighting__name=a.only.split("+"), seed=seeds)
    options = (
        {"weighting.name": "mgda", "weighting.mgda_normalization": "loss+"},
        {"weighting.name": "db_mtl", "weighting.db_beta": 0.0},
        {"weighting.name": "imtl", "weighting.rep_grad": True},
    )
    return sweeps.product(weighting__name=NAMES, seed=seeds) + [
        {**option, "seed": seed} for option in options for seed in seeds
    ]
