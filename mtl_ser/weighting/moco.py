"""MoCo, correcting the bias of multi-objective gradients (Fernando et al. 2023).

As LibMTL computes it. State: Y [T, P] (zeros), lambda [T] (1/T) and the
1-based call count k. Each step, with beta, sigma_b, gamma, sigma_g, rho =
`moco_beta`, `moco_beta_sigma`, `moco_gamma`, `moco_gamma_sigma`, `moco_rho`:

  h_t = g_t / (||g_t|| + 1e-8) * L_t            (the norm becomes the loss),
  Y <- Y - (beta / k^sigma_b) (Y - H),
  lambda <- softmax(lambda - (gamma / k^sigma_g) (Y Y^T + rho I) lambda),
  update = Y^T lambda.

The lambda step ends in a softmax, not a projection on the simplex (LibMTL's
choice, kept). The weights reported are lambda; the heads get their own
gradients unweighted (multiplier 1, LibMTL's 'backward' mode). `init` needs
P for Y: `init(num_tasks, num_params=P)`. Not usable with representation
gradients. No guard is needed: every division has its epsilon.
"""

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method

_EPS = 1e-8  # LibMTL's epsilon in g / (||g|| + 1e-8).


def moco_init(num_tasks: int, num_params: Optional[int] = None):
    """No params; state: Y zeros [T, P], lambda = 1/T, count k = 0."""
    if num_params is None:
        raise ValueError(
            "moco tracks the [T, P] gradients in Y: call init(num_tasks, "
            "num_params=P) with P the number of shared parameters"
        )
    return {}, {
        "tracked": jnp.zeros((num_tasks, num_params), jnp.float32),
        "lam": jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
        "count": jnp.zeros((), jnp.int32),
    }


def moco_aggregate(
    params, state, losses, grads, *, beta, beta_sigma, gamma, gamma_sigma, rho,
    step=None, rng=None,
):  # fmt: skip
    """One MoCo step (see the module docstring). Returns GradOutput."""
    del params, step, rng
    count = state["count"] + 1
    k = count.astype(jnp.float32)
    norms = jnp.linalg.norm(grads, axis=1, keepdims=True)
    scaled = grads / (norms + _EPS) * losses[:, None]
    tracked = state["tracked"]
    tracked = tracked - (beta / k**beta_sigma) * (tracked - scaled)
    lam = state["lam"]
    gram = tracked @ tracked.T + rho * jnp.eye(lam.shape[0], dtype=lam.dtype)
    lam = jax.nn.softmax(lam - (gamma / k**gamma_sigma) * (gram @ lam))
    return GradOutput(
        update=lam @ tracked,
        weights=lam,
        head_weights=jnp.ones_like(lam),
        state={"tracked": tracked, "lam": lam, "count": count},
        param_grads={},
        rep_coeffs=jnp.ones_like(lam),
    )


def make_moco(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    values = {
        "moco_beta": float(cfg.moco_beta),
        "moco_beta_sigma": float(cfg.moco_beta_sigma),
        "moco_gamma": float(cfg.moco_gamma),
        "moco_gamma_sigma": float(cfg.moco_gamma_sigma),
        "moco_rho": float(cfg.moco_rho),
    }
    for field, value in values.items():
        if not value >= 0:
            raise ValueError(f"weighting.{field}={value}: must be >= 0")
    aggregate = functools.partial(
        moco_aggregate,
        beta=values["moco_beta"],
        beta_sigma=values["moco_beta_sigma"],
        gamma=values["moco_gamma"],
        gamma_sigma=values["moco_gamma_sigma"],
        rho=values["moco_rho"],
    )
    return Method("moco", moco_init, aggregate=aggregate, init_needs_width=True)


BUILDERS = {"moco": make_moco}
