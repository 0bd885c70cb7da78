"""MoDo, multi-objective gradient with double sampling (Chen et al. 2023).

As LibMTL computes it. The step gives the method three independent batches
(`batches_per_step` = 3): losses [3, T] and per-task gradients G0, G1, G2
[3, T, P] of the shared parameters. With gamma = `modo_gamma`, rho =
`modo_rho` and lambda (state, 1/T at first):

  lambda <- Proj_simplex(lambda - gamma (G0 (G1^T lambda) + rho lambda)),
  update = sum_t lambda_t g2_t,

Proj_simplex being MGDA's sort-based projection. The heads get the sum of
their gradients over the three batches divided by 3 (head weights 1/3). The
weights reported are lambda. Not usable with representation gradients.
"""

import functools
from typing import Sequence

import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method
from mtl_ser.weighting.mgda import combine_rows, project_to_simplex

BATCHES = 3  # Batches per step.


def modo_init(num_tasks: int):
    """No params; state {"lam": 1/T [T]}."""
    return {}, {"lam": jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)}


def modo_aggregate(params, state, losses, grads, *, gamma, rho, step=None, rng=None):
    """One MoDo step on grads [3, T, P] (see the module docstring)."""
    del params, losses, step, rng
    lam = state["lam"]
    coupled = grads[0] @ combine_rows(lam, grads[1])  # G0 (G1^T lambda), [T].
    lam = project_to_simplex(lam - gamma * (coupled + rho * lam))
    return GradOutput(
        update=combine_rows(lam, grads[2]),
        weights=lam,
        head_weights=jnp.full_like(lam, 1.0 / BATCHES),
        state={"lam": lam},
        param_grads={},
        rep_coeffs=jnp.ones_like(lam),
    )


def make_modo(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    gamma, rho = float(cfg.modo_gamma), float(cfg.modo_rho)
    for field, value in (("modo_gamma", gamma), ("modo_rho", rho)):
        if not value >= 0:
            raise ValueError(f"weighting.{field}={value}: must be >= 0")
    aggregate = functools.partial(modo_aggregate, gamma=gamma, rho=rho)
    return Method("modo", modo_init, aggregate=aggregate, batches_per_step=BATCHES)


BUILDERS = {"modo": make_modo}
