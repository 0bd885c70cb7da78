"""Every loss-weighting method on the built-in corpus, the main job's model.

python launch.py --mode=sweep --config=configs/sweeps/weighting.py \
    --workdir=runs/weighting
(":smoke" runs each variant for a few steps; --sweep.print_commands prints one
launch command per variant instead.)
"""

from configs import synthetic
from mtl_ser import sweeps

NAMES = (
    "equal",
    "uncertainty",
    "uncertainty_revised",
    "dwa",
    "rlw",
    "gls",
    "famo",
    "gradnorm",
    "mgda",
    "pcgrad",
    "cagrad",
    "imtl",
    "nash_mtl",
    "aligned_mtl",
    "db_mtl",
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


def get_config(arg=None):
    return synthetic.get_config(arg)


def get_sweep(arg=None):
    del arg
    return sweeps.product(weighting__name=NAMES, seed=[0])
