"""DB-MTL, dual-balancing multi-task learning (Lin et al. 2023), LibMTL's form.

Loss-scale balancing: each task is trained on log(L_t + 1e-8), whose gradient is
h_t = g_t / (L_t + 1e-8) (the task heads get the multiplier 1 / (L_t + 1e-8)).
Gradient-magnitude balancing: an EMA buffer B [T, P], with k the 1-based count
of calls and no bias correction (so B = (1 - beta) h on the first call),

  B <- h + (beta / k^sigma) (B - h),  a_t = max_j ||B_j|| / (||B_t|| + 1e-8),
  update = sum_t a_t B_t,

so every task enters the update with the norm of the largest buffer.

The buffer is [T, P], so `init` needs P: `init(num_tasks, num_params=P)`.
LibMTL's `backward()` returns ones; we report a (the scales of the buffers),
which says more. Not usable with representation gradients.
"""

import functools
from typing import Optional, Sequence

import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method

_EPS = 1e-8


def db_init(num_tasks: int, num_params: Optional[int] = None):
    """No params; state {"count": int32 k, "buffer": zeros [T, P]}."""
    if num_params is None:
        raise ValueError(
            "db_mtl keeps a [T, P] gradient buffer: call init(num_tasks, "
            "num_params=P) with P the number of shared parameters"
        )
    state = {
        "count": jnp.zeros((), jnp.int32),
        "buffer": jnp.zeros((num_tasks, num_params), jnp.float32),
    }
    return {}, state


def db_aggregate(params, state, losses, grads, *, beta, sigma, step=None, rng=None):
    """One DB-MTL step (see the module docstring). Returns GradOutput."""
    del params, step, rng
    count = state["count"] + 1
    inv_loss = 1.0 / (losses + _EPS)
    h = grads * inv_loss[:, None]  # Gradients of log(L_t + 1e-8).
    decay = beta / count.astype(jnp.float32) ** sigma
    buffer = h + decay * (state["buffer"] - h)
    norms = jnp.linalg.norm(buffer, axis=1)
    scales = norms.max() / (norms + _EPS)
    return GradOutput(
        update=scales @ buffer,
        weights=scales,
        head_weights=inv_loss,
        state={"count": count, "buffer": buffer},
        param_grads={},
        rep_coeffs=jnp.ones_like(scales),
    )


def make_db_mtl(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    aggregate = functools.partial(
        db_aggregate, beta=float(cfg.db_beta), sigma=float(cfg.db_beta_sigma)
    )
    return Method("db_mtl", db_init, aggregate=aggregate, init_needs_width=True)


BUILDERS = {"db_mtl": make_db_mtl}
