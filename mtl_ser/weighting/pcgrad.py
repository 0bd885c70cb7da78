"""PCGrad, projecting conflicting gradients (Yu et al. 2020), as LibMTL does it.

For each task i, in a random order of *all* tasks (LibMTL shuffles
range(T), so i itself is included: the self-term fires only if pc_i has
turned against g_i), and for each j in that order:

  if pc_i . g_j < 0:  pc_i -= (pc_i . g_j) / (||g_j||^2 + 1e-8) * g_j

The test uses the current pc_i, the projection the original g_j. The update is
d = sum_i pc_i, and the reported weights are the exact coefficients a with
d = sum_j a_j g_j, as LibMTL returns them.

Every pc_i stays in the span of the g_j, so we track its coefficients c_i
(pc_i = c_i^T G) and take every dot product from the Gram matrix K = G G^T:
pc_i . g_j = c_i^T K[:, j]. The cost is O(T^2 P) for K plus O(T P) for d.
The T rows are independent, so they run side by side (vmap).

Randomness: LibMTL uses Python's global `random.shuffle`; we draw each task's
order with `jax.random.permutation` from its own key, split from the step's
`rng`. The orders are uniform over permutations, as LibMTL's, but not the same
draws.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method, no_params
from mtl_ser.weighting.mgda import combine_rows, gram

EPS = 1e-8  # LibMTL's guard in ||g_j||^2 + 1e-8.


def task_orders(rng, num_tasks: int):
    """[T, T] int32: row i is task i's visiting order, a permutation of all T."""
    keys = jax.random.split(rng, num_tasks)
    return jax.vmap(lambda key: jax.random.permutation(key, num_tasks))(keys)


def pcgrad_coefficients(k, orders):
    """Coefficients of each projected gradient on the original ones.

    Args:
      k: [T, T] Gram matrix G G^T.
      orders: [T, T] int, row i the order in which task i visits the tasks.

    Returns:
      [T, T] C with pc_i = sum_j C[i, j] g_j.
    """
    num = k.shape[0]
    sq_norms = jnp.diag(k) + EPS

    def project_one(i, order):
        def visit(pos, c):
            j = order[pos]
            dot = c @ k[:, j]  # pc_i . g_j
            return c.at[j].add(jnp.where(dot < 0, -dot / sq_norms[j], 0.0))

        start = jnp.zeros((num,), k.dtype).at[i].set(1.0)
        return jax.lax.fori_loop(0, num, visit, start)

    return jax.vmap(project_one)(jnp.arange(num), orders)


def pcgrad_aggregate(params, state, losses, grads, *, step=None, rng):
    """PCGrad's update from per-task gradients grads [T, P].

    Returns:
      GradOutput: update = sum_i pc_i, weights = a with update = sum_j a_j g_j,
      head weights and rep_coeffs 1.
    """
    del params, losses, step
    coeffs = pcgrad_coefficients(gram(grads), task_orders(rng, grads.shape[0]))
    a = coeffs.sum(0)  # [T]
    ones = jnp.ones_like(a)
    return GradOutput(
        update=combine_rows(a, grads),
        weights=a,
        head_weights=ones,
        state=state,
        param_grads={},
        rep_coeffs=ones,
    )


def make_pcgrad(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del cfg, tasks, steps_per_epoch
    return Method("pcgrad", no_params, aggregate=pcgrad_aggregate)


# name -> builder(weighting config, tasks, steps_per_epoch) -> Method.
BUILDERS = {"pcgrad": make_pcgrad}
