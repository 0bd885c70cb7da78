"""The paper's full-width AlexNet or VGG on a GPU or TPU: bfloat16, batch 256.

The training split's log-mels live on the accelerator (data.device_cache), so
the host sends only where each crop starts and the step never waits for it.

python launch.py --config=configs/accelerator.py --workdir=runs/accel_alexnet
python launch.py --config=configs/accelerator.py:trunk=vgg16 --workdir=runs/accel_vgg16
python launch.py --config=configs/accelerator.py:corpus=emodb,trunk=vgg11 \
    --config.corpus.root=/data/emodb --workdir=runs/accel_emodb
python launch.py --config=configs/accelerator.py:smoke --workdir=/tmp/accel

Arguments: trunk (alexnet, vgg11, vgg13, vgg16, vgg19; VGG with BatchNorm),
corpus (a preset of configs/common.py), stl (emotion alone, equal weights;
else the corpus's tasks with uncertainty weighting), smoke.
"""

from configs import common


def get_config(arg=None):
    arg = common.parse_arg(
        arg, smoke=False, corpus="synthetic", trunk="alexnet", stl=False
    )
    paper = f"corpus={arg.corpus}" + (",smoke" if arg.smoke else "")
    c = common.paper_config(paper, trunk=arg.trunk, multitask=not arg.stl)
    c.model.dtype = "bfloat16"  # Parameters and optimizer stay float32.
    c.data.device_cache = True
    c.data.batch_size, c.data.eval_batch_size = 256, 1024
    c.train.num_steps, c.train.eval_every = 2_000, 250
    c.train.checkpoint_every, c.train.log_every = 500, 50
    if arg.smoke:  # paper_config shrank the model and the run; keep them so.
        c.data.batch_size, c.data.eval_batch_size = 8, 16
        c.train.num_steps, c.train.eval_every = 4, 2
        c.train.checkpoint_every, c.train.log_every = 2, 2
    return c
