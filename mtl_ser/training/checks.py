"""Config checks that run before any work; each error is one line naming the field."""

import math
import numbers
import os

import jax

from mtl_ser import models, tasks, weighting
from mtl_ser.data import cache, corpora, splits, statistics
from mtl_ser.errors import ConfigError
from mtl_ser.training import xla_options

# data.speed_factors beyond these turn a voice into another kind of voice.
SPEED_RANGE = (0.5, 2.0)


def _require(ok: bool, message: str):
    if not ok:
        raise ConfigError(message)


def validate_config(config):
    """Raises ConfigError on the first impossible value.

    Args:
      config: the full ConfigDict.
    """
    for check in CHECKS:
        check(config)


def _check_model(c):
    """The trunk: model.*."""
    _require(
        c.model.name in models.TRUNKS,
        f"model.name={c.model.name!r}: unknown; choose one of {sorted(models.TRUNKS)}",
    )
    _require(c.model.width > 0, f"model.width={c.model.width}: must be > 0")
    _require(
        c.model.deltas in (0, 1, 2),
        f"model.deltas={c.model.deltas}: choose 0, 1 (deltas) or 2 (and accelerations)",
    )
    _require(
        len(c.model.pool_size) in (0, 2)
        and all(isinstance(n, int) and n >= 1 for n in c.model.pool_size),
        f"model.pool_size={tuple(c.model.pool_size)}: give () (the trunk's own) "
        "or two positive ints (time, mel), e.g. (1, 1)",
    )
    _require(
        c.model.dtype in ("float32", "bfloat16"),
        f"model.dtype={c.model.dtype!r}: choose 'float32' or 'bfloat16'",
    )


def _check_train(c):
    """The optimizer, the loop, faults and the report: optim.*, train.*, report.*."""
    _require(
        c.train.evaluate_at in ("best", "last"),
        f"train.evaluate_at={c.train.evaluate_at!r}: choose 'best' or 'last'",
    )
    _require(
        c.optim.learning_rate > 0,
        f"optim.learning_rate={c.optim.learning_rate}: must be > 0",
    )
    for field in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
        _require(c.train[field] > 0, f"train.{field}={c.train[field]}: must be > 0")
    _require(
        0.0 <= c.train.ema_decay < 1.0,
        f"train.ema_decay={c.train.ema_decay}: must be in [0, 1) (0: off)",
    )
    _require(
        c.train.on_nonfinite in ("stop", "skip"),
        f"train.on_nonfinite={c.train.on_nonfinite!r}: choose 'stop' or 'skip'",
    )
    xla_options.parse_library_fusions(c.train.cpu_library_fusions)
    _require(
        c.train.max_skipped_steps >= 0,
        f"train.max_skipped_steps={c.train.max_skipped_steps}: must be >= 0",
    )
    name = c.train.best_metric.split("/")
    _require(
        len(name) == 3 and name[0] == "val" and name[2] in c.tasks.split(","),
        f"train.best_metric={c.train.best_metric!r}: use val/<metric>/<task>",
    )
    _require(
        name[1] not in ("loss", "mae", "rmse"),
        f"train.best_metric={c.train.best_metric!r}: the best checkpoint has the "
        "highest value; choose a metric where higher is better (ua, ccc, ...)",
    )
    _require(
        c.report.gradcam_per_class >= 0,
        f"report.gradcam_per_class={c.report.gradcam_per_class}: must be >= 0",
    )
    _require(
        c.report.tsne_perplexity > 0,
        f"report.tsne_perplexity={c.report.tsne_perplexity}: must be > 0",
    )


def _check_split(c):
    """The corpus and how it is split: corpus.*, split.* (and evaluate_at)."""
    no_val = (
        not c.split.cv_validation
        if c.split.protocol not in ("holdout", "corpus")
        else c.split.protocol == "holdout" and not c.split.val_speakers.strip()
    )
    _require(
        not no_val or c.train.evaluate_at == "last",
        "train.evaluate_at='best': without validation speakers (split."
        + (
            "val_speakers=''"
            if c.split.protocol == "holdout"
            else "cv_validation=False"
        )
        + ") there is no best checkpoint; set train.evaluate_at='last'",
    )
    _require(
        c.corpus.name in corpora.CORPORA,
        f"corpus.name={c.corpus.name!r}: unknown; choose one of "
        f"{sorted(corpora.CORPORA)}",
    )
    _require(
        c.corpus.name in corpora.GENERATED or bool(c.corpus.root),
        f"corpus.root is required for the {c.corpus.name} corpus: its folder "
        "(--config.corpus.root=...)",
    )
    _require(
        c.corpus.name in corpora.GENERATED or os.path.exists(c.corpus.root),
        f"corpus.root={c.corpus.root!r}: not found; point it at the "
        f"{c.corpus.name} corpus (--config.corpus.root=...)",
    )
    _require(
        c.split.protocol in splits.PROTOCOLS,
        f"split.protocol={c.split.protocol!r}: choose one of {splits.PROTOCOLS}",
    )
    _require(c.split.fold >= -1, f"split.fold={c.split.fold}: a fold index or -1")


def _check_data(c):
    """Batches, inputs, caches and augmentation: data.*."""
    _require(
        c.data.class_weights in ("none", "balanced"),
        f"data.class_weights={c.data.class_weights!r}: choose 'none' or 'balanced'",
    )
    _require(
        c.data.normalisation in statistics.MODES,
        f"data.normalisation={c.data.normalisation!r}: choose one of "
        f"{', '.join(statistics.MODES)}",
    )
    for field in ("batch_size", "eval_batch_size"):
        size = c.data[field]
        _require(size > 0, f"data.{field}={size}: must be > 0")
        _require(
            size % jax.device_count() == 0,
            f"data.{field}={size}: must be divisible by the "
            f"{jax.device_count()} devices",
        )
    _require(
        c.data.num_workers >= 0,
        f"data.num_workers={c.data.num_workers}: must be >= 0 (0: no workers)",
    )
    _require(
        c.data.read_threads >= 0,
        f"data.read_threads={c.data.read_threads}: must be >= 0 (0: no threads)",
    )
    _require(
        c.data.device_cache_max_mb > 0,
        f"data.device_cache_max_mb={c.data.device_cache_max_mb}: must be > 0",
    )
    _require(
        not (c.data.device_cache and c.data.features_on_device),
        "data.device_cache=True holds log-mels, data.features_on_device=True "
        "makes them from waveforms in the step: choose one",
    )
    _require(
        c.data.inputs in ("segments", "fixed"),
        f"data.inputs={c.data.inputs!r}: choose 'segments' or 'fixed'",
    )
    _require(c.data.crop_frames > 0, f"data.crop_frames={c.data.crop_frames}: > 0")
    _require(c.data.eval_hop_frames > 0, "data.eval_hop_frames: must be > 0")
    for field in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bands"):
        _require(c.data[field] >= 0, f"data.{field}={c.data[field]}: must be >= 0")
    _check_augmentation(c.data)
    _require(
        c.data.bad_audio in cache.BAD_AUDIO_POLICIES,
        f"data.bad_audio={c.data.bad_audio!r}: choose one of "
        f"{cache.BAD_AUDIO_POLICIES}",
    )


def _check_weighting(c):
    """Tasks and the weighting method: tasks, weighting.*, regression_loss."""
    _require(
        c.weighting.name in weighting.METHODS,
        f"weighting.name={c.weighting.name!r}: unknown; choose one of "
        f"{list(weighting.METHODS)}",
    )
    _require(
        c.weighting.per_task_grads in ("vmap", "loop"),
        f"weighting.per_task_grads={c.weighting.per_task_grads!r}: "
        "choose 'vmap' or 'loop'",
    )
    try:
        task_list = tasks.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
        method = weighting.make_method(c.weighting, task_list)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _require(
        not method.needs_grads or len(task_list) > 1,
        f"weighting.name={c.weighting.name!r}: a gradient method needs 2 or more "
        f"tasks (tasks={c.tasks!r}); use 'equal' for a single task",
    )
    _require(
        c.regression_loss in ("mse", "ccc"),
        f"regression_loss={c.regression_loss!r}: choose 'mse' or 'ccc'",
    )


CHECKS = (_check_model, _check_train, _check_split, _check_data, _check_weighting)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_augmentation(d):
    """Speed perturbation and noise (data.speed_factors, data.noise_*)."""
    factors = d.speed_factors
    _require(
        isinstance(factors, (tuple, list)) and all(map(_is_number, factors)),
        f"data.speed_factors={factors!r}: a tuple of numbers, e.g. (0.9, 1.1)",
    )
    lo, hi = SPEED_RANGE
    for f in factors:
        _require(
            lo <= f <= hi,
            f"data.speed_factors={tuple(factors)}: {f} is outside [{lo}, {hi}]",
        )
        _require(
            f != 1.0,
            f"data.speed_factors={tuple(factors)}: leave out 1.0 (the original "
            "speed is always used)",
        )
    _require(
        len(set(factors)) == len(factors),
        f"data.speed_factors={tuple(factors)}: a factor is listed twice",
    )
    prob = d.noise_prob
    _require(
        _is_number(prob) and 0.0 <= prob <= 1.0,
        f"data.noise_prob={prob!r}: must be in [0, 1]",
    )
    snr = d.noise_snr_db
    _require(
        isinstance(snr, (tuple, list))
        and len(snr) == 2
        and all(_is_number(v) and math.isfinite(v) for v in snr),
        f"data.noise_snr_db={snr!r}: a (lo, hi) pair of finite SNRs in dB",
    )
    _require(
        snr[0] <= snr[1],
        f"data.noise_snr_db={tuple(snr)}: lo {snr[0]} is above hi {snr[1]}",
    )
