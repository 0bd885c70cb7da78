"""Every loss-weighting method on the built-in corpus, the main job's model.

Each method runs at its defaults (LibMTL's). Four methods also run with the
one option that departs from its default: MGDA with Sener & Koltun's `loss+`
gradient normalisation (their code's setting), DB-MTL without its gradient
EMA (`db_beta=0`), IMTL on the gradients of the shared representation
(`rep_grad=True`, LibMTL's own option) and MoCo without its tracking of the
gradients (`moco_beta=1, moco_beta_sigma=0`: Y is each step's scaled
gradients) and MoDo with a ridge on lambda of the size of the tasks' squared
gradient norms (`modo_rho=100`); at their defaults these five miss `equal` on
this corpus.

python launch.py --mode=sweep --config=configs/sweeps/weighting.py \
    --workdir=runs/weighting
(":smoke" runs each variant for a few steps; ":seeds=3" runs seeds 0, 1, 2 of
each, the table then giving mean +/- std; ":only=equal+stch+moco" runs those
methods at their defaults, and ":only=moco,options=True" their options too;
--sweep.print_commands prints one launch command per variant instead.)
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
    a = common.parse_arg(arg, seeds=1, smoke=False, only="", options=False)
    unknown = sorted(set(filter(None, a.only.split("+"))) - set(NAMES))
    if unknown:
        raise ValueError(f"config argument only: unknown methods {unknown}")
    return a


def get_config(arg=None):
    return synthetic.get_config("smoke" if _arg(arg).smoke else None)


# Each the one documented option that departs from its method's default.
OPTIONS = (
    {"weighting.name": "mgda", "weighting.mgda_normalization": "loss+"},
    {"weighting.name": "db_mtl", "weighting.db_beta": 0.0},
    {"weighting.name": "imtl", "weighting.rep_grad": True},
    {
        "weighting.name": "moco",
        "weighting.moco_beta": 1.0,
        "weighting.moco_beta_sigma": 0.0,
    },
    {"weighting.name": "modo", "weighting.modo_rho": 100.0},
)


def get_sweep(arg=None):
    a = _arg(arg)
    seeds = list(range(a.seeds))
    names = a.only.split("+") if a.only else NAMES
    options = [o for o in OPTIONS if o["weighting.name"] in names]
    if a.only and not a.options:
        options = []
    return sweeps.product(weighting__name=names, seed=seeds) + [
        {**option, "seed": seed} for option in options for seed in seeds
    ]
