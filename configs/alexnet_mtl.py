"""The paper's AlexNet-MTL experiment on a corpus chosen by the argument.

python launch.py --config=configs/alexnet_mtl.py:corpus=emodb \
    --workdir=runs/alexnet_mtl_emodb
python launch.py --config=configs/alexnet_mtl.py:smoke --workdir=/tmp/alexnet_mtl
"""

from configs import common


def get_config(arg=None):
    return common.paper_config(arg, trunk="alexnet", multitask=True)
