"""Automatic loss weighting: turns the per-task loss vector into one objective.

Each method is a `Method` of pure functions, usable on plain arrays and inside
the jitted train step:

  params, state = method.init(num_tasks)
  total, weights, state = method.combine(params, state, losses, step=..., rng=...)

`params` are learnable (they live in `TrainState.params["weighting"]`, are trained
by the main optimizer and checkpointed); `state` is carried but not trained.
`weights[t]` is the effective weight d total / d losses[t], logged every step.

Gradient-based methods (a later issue) will set `needs_grads=True` and combine
per-task gradients of the shared parameters instead; the step computes those
only for such methods, so loss-based methods cost nothing extra.
"""

from mtl_ser.weighting.base import Method
from mtl_ser.weighting.loss_based import METHODS, make_method

__all__ = ["METHODS", "Method", "make_method"]
