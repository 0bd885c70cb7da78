"""The paper's VGG-MTL experiment on a corpus chosen by the argument.

python launch.py --config=configs/vgg_mtl.py:corpus=emodb \
    --workdir=runs/vgg_mtl_emodb
python launch.py --config=configs/vgg_mtl.py:smoke --workdir=/tmp/vgg_mtl
"""

from configs import common


def get_config(arg=None):
    return common.paper_config(arg, trunk="vgg11", multitask=True)
