"""The paper's VGG-STL experiment on a corpus chosen by the argument.

python launch.py --config=configs/vgg_stl.py:corpus=emodb \
    --workdir=runs/vgg_stl_emodb
python launch.py --config=configs/vgg_stl.py:smoke --workdir=/tmp/vgg_stl
"""

from configs import common


def get_config(arg=None):
    return common.paper_config(arg, trunk="vgg11", multitask=False)
