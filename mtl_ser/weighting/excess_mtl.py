"""ExcessMTL (He et al. 2024): weights from each task's excess risk, LibMTL's form.

A loss-weighting method that needs the per-task gradients g_t of the shared
parameters. With A [T, P] the accumulated squared gradients and eta =
`excess_step_size`, each step:

  A_t += g_t^2,  e_t = sum_p g_tp^2 / sqrt(A_tp + 1e-7)  (the excess risk),
  first step:  initial = e, w = 1;
  later:       w <- w exp(eta e / initial),  w <- T w / sum w,

and the update is sum_t w_t g_t, the heads get w too (LibMTL back-propagates
sum_t w_t L_t). The weights reported are w. The state holds A, w and initial,
so `init` needs P: `init(num_tasks, num_params=P)`. Not usable with
representation gradients (LibMTL's weighted backward would then reach no
shared parameter).

Departures, where LibMTL would give inf or NaN (identical otherwise):
* The multiply-then-normalise is done on log w (log w += eta e / initial, then
  w = T softmax(log w)): the same numbers in exact arithmetic, and it cannot
  overflow when e / initial is large.
* A task whose e is still 0 at its first step (a zero gradient: no label in
  the batch) takes its first nonzero e as `initial`; until then its factor is
  exp(0) = 1. LibMTL divides by the 0.
"""

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method

_EPS = 1e-7  # LibMTL's epsilon under the square root.


def excess_init(num_tasks: int, num_params: Optional[int] = None):
    """No params; state: A [T, P] zeros, w ones [T], initial zeros [T]."""
    if num_params is None:
        raise ValueError(
            "excess_mtl accumulates [T, P] squared gradients: call "
            "init(num_tasks, num_params=P) with P the number of shared parameters"
        )
    return {}, {
        "accumulated": jnp.zeros((num_tasks, num_params), jnp.float32),
        "weights": jnp.ones((num_tasks,), jnp.float32),
        "initial": jnp.zeros((num_tasks,), jnp.float32),
    }


def excess_risks(accumulated, grads):
    """e [T]: sum_p g^2 / sqrt(A + 1e-7), with A already including g^2."""
    return (grads * grads / jnp.sqrt(accumulated + _EPS)).sum(1)


def excess_aggregate(params, state, losses, grads, *, step_size, step=None, rng=None):
    """One ExcessMTL step (see the module docstring). Returns GradOutput."""
    del params, losses, step, rng
    accumulated = state["accumulated"] + grads * grads
    excess = excess_risks(accumulated, grads)
    known = state["initial"] > 0
    initial = jnp.where(known, state["initial"], excess)
    rate = jnp.where(known, excess / jnp.where(known, initial, 1.0), 0.0)
    num_tasks = grads.shape[0]
    weights = num_tasks * jax.nn.softmax(jnp.log(state["weights"]) + step_size * rate)
    return GradOutput(
        update=weights @ grads,
        weights=weights,
        head_weights=weights,
        state={"accumulated": accumulated, "weights": weights, "initial": initial},
        param_grads={},
        rep_coeffs=jnp.ones_like(weights),
    )


def make_excess_mtl(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    step_size = float(cfg.excess_step_size)
    if not step_size >= 0:
        raise ValueError(f"weighting.excess_step_size={step_size}: must be >= 0")
    aggregate = functools.partial(excess_aggregate, step_size=step_size)
    return Method("excess_mtl", excess_init, aggregate=aggregate, init_needs_width=True)


BUILDERS = {"excess_mtl": make_excess_mtl}
