"""The main job: multitask AlexNet (CPU-sized) on the built-in synthetic corpus.

python launch.py --config=configs/synthetic.py --workdir=runs/synthetic
python launch.py --config=configs/synthetic.py:smoke --workdir=/tmp/smoke
"""

from configs import common, default


def get_config(arg=None):
    arg = common.parse_arg(arg, smoke=False)
    c = default.get_config()
    c.corpus.name, c.corpus.root = "synthetic", "data/synthetic"
    c.tasks = "emotion,gender,arousal,valence,dominance"
    c.model.name, c.model.width, c.model.hidden = "alexnet", 0.25, 2048
    c.weighting.name = "uncertainty"
    c.optim.learning_rate, c.optim.warmup_steps = 1e-3, 100
    c.data.batch_size = 32
    c.train.num_steps, c.train.eval_every = 1_500, 250
    c.train.checkpoint_every, c.train.log_every = 250, 25
    if arg.smoke:
        default.smoke(c)
    return c
