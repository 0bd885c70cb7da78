"""STCH, smooth Tchebycheff scalarisation (Lin et al. 2024), as LibMTL does it.

With mu = `stch_mu`, E_w = `stch_warmup_epochs` and epoch e = step //
steps_per_epoch:

  e <= E_w:  total = sum_t log(L_t + 1e-20)  (epoch E_w also sums the losses
             into the nadir's running mean),
  e >  E_w:  z = the mean losses of epoch E_w (the nadir),
             x_t = log(L_t / z_t + 1e-20),
             total = T mu log sum_t exp((x_t - max x) / mu),

with max x held constant (stop-gradient), so the value is shifted by -T max x
but the gradient is that of T mu logsumexp(x / mu):

  d total / d L_t = T softmax(x / mu)_t / (z_t (L_t / z_t + 1e-20)).

`combine` returns these effective weights (LibMTL's `backward()` returns ones).
The task heads get them too, since the step differentiates the total.

Guards (LibMTL gives NaN):
* A negative loss (float rounding of e.g. 1 - CCC) is read as 0, in the logs
  and in the nadir, with zero gradient there; others are untouched.
* A task whose nadir is 0 (its loss was 0 all through epoch E_w: no labels) is
  left out of the maximum: its x is a large negative constant, so its weight
  is 0 and the others' are those of the remaining tasks.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting import history as history_lib
from mtl_ser.weighting.base import Method

_EPS = 1e-20  # LibMTL's epsilon in log(L + 1e-20) and log(L / z + 1e-20).
_LEFT_OUT = -1e30  # x of a task with a zero nadir: never the maximum.


def stch_init(num_tasks: int):
    """No params; state: the running sum and count of epoch E_w's losses."""
    return {}, {
        "sum": jnp.zeros((num_tasks,), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
    }


def nadir(state):
    """z [T]: the mean losses accumulated in the warm-up epoch."""
    return state["sum"] / jnp.maximum(state["count"], 1).astype(jnp.float32)


def _non_negative(losses):
    """The losses, with a negative one read as 0 (zero gradient there)."""
    return jnp.where(losses >= 0, losses, 0.0)


def _warmup_total(losses):
    return jnp.log(_non_negative(losses) + _EPS).sum()


def _tchebycheff_total(losses, z, mu):
    active = z > 0
    ratio = _non_negative(losses) / jnp.where(active, z, 1.0)
    x = jnp.where(active, jnp.log(ratio + _EPS), _LEFT_OUT)
    shift = jax.lax.stop_gradient(x.max())
    return losses.shape[0] * mu * jax.nn.logsumexp((x - shift) / mu)


def stch_combine(
    params, state, losses, *, mu, warmup_epochs, steps_per_epoch, step, rng=None
):
    """One STCH step (see the module docstring).

    Args:
      params: unused ({}).
      state: {"sum": [T], "count": int32}, epoch E_w's running losses.
      losses: [T] task losses.
      mu, warmup_epochs, steps_per_epoch: bound at build time.
      step: int32 scalar, completed optimizer steps.

    Returns:
      (total, effective weights d total / d L [T], new state).
    """
    del params, rng
    epoch = history_lib.epoch(step, steps_per_epoch)
    z = nadir(state).astype(losses.dtype)

    def total_fn(values):  # Both forms are finite for any z; pick one.
        late = _tchebycheff_total(values, z, mu)
        return jnp.where(epoch > warmup_epochs, late, _warmup_total(values))

    total = total_fn(losses)
    weights = jax.grad(total_fn)(jax.lax.stop_gradient(losses))
    accumulate = epoch == warmup_epochs
    held = jax.lax.stop_gradient(_non_negative(losses)).astype(jnp.float32)
    state = {
        "sum": jnp.where(accumulate, state["sum"] + held, state["sum"]),
        "count": state["count"] + accumulate.astype(jnp.int32),
    }
    return total, weights, state


def make_stch(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks
    mu, warmup = float(cfg.stch_mu), int(cfg.stch_warmup_epochs)
    if not mu > 0:
        raise ValueError(f"weighting.stch_mu={cfg.stch_mu}: must be > 0")
    if warmup < 0:
        raise ValueError(
            f"weighting.stch_warmup_epochs={cfg.stch_warmup_epochs}: must be >= 0"
        )
    combine = functools.partial(
        stch_combine,
        mu=mu,
        warmup_epochs=warmup,
        steps_per_epoch=int(steps_per_epoch),
    )
    return Method("stch", stch_init, combine)


BUILDERS = {"stch": make_stch}
