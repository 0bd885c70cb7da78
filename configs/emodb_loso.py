"""EmoDB, leave one speaker out: the recipe of docs/results_emodb.md's best runs.

python launch.py --mode=cv --config=configs/emodb_loso.py \
    --config.corpus.root=/path/to/emodb --workdir=runs/emodb_vgg
python launch.py --mode=cv --config=configs/emodb_loso.py:trunk=alexnet \
    --config.corpus.root=/path/to/emodb --workdir=runs/emodb_alexnet
python launch.py --mode=cv --config=configs/emodb_loso.py:multitask \
    --config.corpus.root=/path/to/emodb --config.weighting.name=equal \
    --workdir=runs/emodb_vgg_mtl

All seven emotions, ten folds of one test speaker each. The CPU-sized trunks
(VGG-11 at width 1/8, or AlexNet at width 1/4), BatchNorm after each conv,
SpecAugment and weight averaging; the final state is scored. Arguments:
  trunk=vgg11|alexnet   the trunk (default vgg11).
  multitask             emotion and gender, uncertainty weighting (else emotion).
  validation            each fold validates on the next speaker (curves only),
                        instead of training on all nine other speakers.
  smoke                 the same settings shrunk to seconds on the synthetic
                        smoke corpus, one holdout split (for tests).
"""

from configs import common, default

# Width of each trunk: about 70 ms (VGG) and 24 ms (AlexNet) per step of 32
# crops on this project's 2-core CPU (benchmarks/train_step.py).
WIDTHS = {"vgg11": 0.125, "alexnet": 0.25}


def get_config(arg=None):
    arg = common.parse_arg(
        arg, trunk="vgg11", multitask=False, validation=False, smoke=False
    )
    if arg.trunk not in WIDTHS:
        raise ValueError(
            f"config argument trunk={arg.trunk!r}: choose from {sorted(WIDTHS)}"
        )
    c = common.paper_config("corpus=emodb", trunk=arg.trunk, multitask=arg.multitask)
    c.split.protocol = "speaker"
    c.split.cv_validation = arg.validation
    c.emotion_classes = "anger,boredom,disgust,fear,happiness,neutral,sadness"
    c.model.width, c.model.hidden = WIDTHS[arg.trunk], 2048
    c.model.batch_norm = True
    c.optim.learning_rate, c.optim.warmup_steps = 1e-3, 100
    c.data.time_masks = c.data.freq_masks = 2
    c.train.num_steps, c.train.eval_every = 3_000, 250
    c.train.checkpoint_every, c.train.log_every = 250, 25
    c.train.ema_decay = 0.999
    c.train.evaluate_at = "last"
    c.train.progress_bar = False
    if arg.smoke:
        default.smoke(c)
        c.corpus.name, c.split.protocol = "synthetic", "holdout"
        c.emotion_classes = "anger,happiness,neutral,sadness"
    return c
