"""The paper's AlexNet-STL experiment on a corpus chosen by the argument.

python launch.py --config=configs/alexnet_stl.py:corpus=emodb \
    --workdir=runs/alexnet_stl_emodb
python launch.py --config=configs/alexnet_stl.py:smoke --workdir=/tmp/alexnet_stl
"""

from configs import common


def get_config(arg=None):
    return common.paper_config(arg, trunk="alexnet", multitask=False)
