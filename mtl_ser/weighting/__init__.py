"""Automatic loss weighting: turns per-task losses (or gradients) into one update.

Each method is a `Method` of pure functions, usable on plain arrays and inside
the jitted train step. Loss-based methods scalarise the losses:

  params, state = method.init(num_tasks)
  total, weights, state = method.combine(params, state, losses, step=..., rng=...)

Gradient-based methods (`method.needs_grads`) combine per-task gradients of the
shared parameters, flattened to grads [T, P]:

  out = method.aggregate(params, state, losses, grads, step=..., rng=...)
  # out.update [P] replaces the shared parameters' gradient.

`params` are learnable (they live in `TrainState.params["weighting"]`, are
trained by the main optimizer and checkpointed); `state` is carried but not
trained. Each module lists its methods in `BUILDERS`; `make_method` builds one
from the `weighting` config.
"""

from typing import Sequence

from mtl_ser.weighting import (
    aligned_mtl,
    cagrad,
    db_mtl,
    excess_mtl,
    fairgrad,
    graddrop,
    gradnorm,
    gradvac,
    imtl,
    loss_based,
    mgda,
    moco,
    modo,
    nash_mtl,
    pcgrad,
    sdmgrad,
    stch,
    upgrad,
)
from mtl_ser.weighting.base import GradOutput, Method

_BUILDERS = {
    **loss_based.BUILDERS,
    **stch.BUILDERS,
    **gradnorm.BUILDERS,
    **mgda.BUILDERS,
    **pcgrad.BUILDERS,
    **cagrad.BUILDERS,
    **imtl.BUILDERS,
    **nash_mtl.BUILDERS,
    **aligned_mtl.BUILDERS,
    **db_mtl.BUILDERS,
    **graddrop.BUILDERS,
    **excess_mtl.BUILDERS,
    **moco.BUILDERS,
    **gradvac.BUILDERS,
    **fairgrad.BUILDERS,
    **upgrad.BUILDERS,
    **modo.BUILDERS,
    **sdmgrad.BUILDERS,
}

METHODS = tuple(_BUILDERS)

# Methods that take several independent batches per step (the rest take one).
_BATCHES_PER_STEP = {"modo": modo.BATCHES, "sdmgrad": sdmgrad.BATCHES}


def batches_per_step(name: str) -> int:
    """How many batches of data.batch_size method `name` takes per step."""
    return _BATCHES_PER_STEP.get(name, 1)


def make_method(cfg, tasks: Sequence, *, steps_per_epoch: int = 1) -> Method:
    """Builds the configured method.

    Args:
      cfg: the `weighting` sub-config.
      tasks: the task tuple (kinds choose e.g. the uncertainty factors).
      steps_per_epoch: train steps per pass over the train split, for the
        methods defined per epoch (DWA, GradNorm).

    Returns:
      A Method.
    """
    if cfg.name not in _BUILDERS:
        raise ValueError(
            f"weighting.name={cfg.name!r}: unknown; choose one of {list(METHODS)}"
        )
    method = _BUILDERS[cfg.name](cfg, tasks, steps_per_epoch)
    if cfg.get("rep_grad", False) and not method.rep_grad_ok:
        raise ValueError(
            f"weighting.rep_grad=True: {cfg.name!r} does not take representation "
            "gradients (only gradient methods that LibMTL allows it for do)"
        )
    return method


__all__ = ["METHODS", "GradOutput", "Method", "batches_per_step", "make_method"]
