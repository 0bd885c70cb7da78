"""GradVac, gradient vaccine (Wang et al. 2021), as LibMTL computes it.

The shared parameters are cut into K groups (`gradvac_group_type`: 0 the whole
model, 1 one group per module with parameters, e.g. a conv's kernel and bias,
2 one group per parameter tensor). State: target cosines rho_hat [T, T, K],
zeros at first, never symmetric. For each task i, in a random order of the
other tasks j, and for each group k (slice S):

  rho = pc_i[S] . g_j[S] / (||pc_i[S]|| ||g_j[S]|| + 1e-8)
  if rho < rho_hat_ijk:
    pc_i[S] += g_j[S] ||pc_i[S]|| (rho_hat sqrt(1 - rho^2) - rho sqrt(1 - rho_hat^2))
               / (||g_j[S]|| sqrt(1 - rho_hat^2) + 1e-8)
  rho_hat_ijk <- (1 - beta) rho_hat_ijk + beta rho   (always; rho before the change)

with pc_i starting at g_i; the update is d = sum_i pc_i. LibMTL's `backward()`
returns ones (its coefficient bookkeeping is commented out), so the weights
reported are ones; the heads get multiplier 1. Not usable with representation
gradients.

As in PCGrad, every pc_i[S] stays in the span of the g_j[S], so we track its
coefficients per group (pc_i[S] = sum_j C[i, k, j] g_j[S]) and take every dot
product from the per-group Gram matrices K_k = G[:, S] G[:, S]^T: O(T^2 P)
for the K_k and O(T P) for d, with the T rows run side by side (vmap). The
groups come from the step's `layout` of the shared parameters (module path and
size of each tensor, in the order of the gradient's columns).

Randomness: LibMTL's `random.shuffle`; we draw each task's order of the others
with `jax.random.permutation`, uniform as LibMTL's, not the same draws.

Guard (LibMTL would give NaN): 1 - rho^2 and 1 - rho_hat^2 are clamped at 0
before the square roots, since float rounding can put |rho| a little above 1.
The norms from c^T K c are clamped at 0 likewise. A 1-element group always has
cosine +-1; after one projection its residual is rounding noise, and so is the
next rho (LibMTL has the same noise, of a different size), while d stays put.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_ser.weighting.base import GradOutput, Method

EPS = 1e-8  # LibMTL's epsilons in the cosine and the step.
GROUP_TYPES = (0, 1, 2)


def group_sizes(layout, group_type: int) -> tuple:
    """The sizes of the K contiguous groups of the gradient's columns.

    Args:
      layout: ((module path, size), ...) per shared parameter tensor, in the
        order of the columns.
      group_type: 0 whole model, 1 per module (consecutive tensors with the same
        module path), 2 per tensor.
    """
    if group_type == 0:
        return (sum(size for _, size in layout),)
    if group_type == 2:
        return tuple(size for _, size in layout)
    sizes, last = [], None
    for module, size in layout:
        if sizes and module == last:
            sizes[-1] += size
        else:
            sizes.append(size)
        last = module
    return tuple(sizes)


def _slices(sizes):
    """The groups' column slices, in order."""
    bounds = np.cumsum((0,) + tuple(sizes)).tolist()
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def group_grams(grads, sizes):
    """[K, T, T]: the Gram matrix of each group's slice of grads [T, P]."""
    return jnp.stack([grads[:, s] @ grads[:, s].T for s in _slices(sizes)])


def _sqrt0(x):
    return jnp.sqrt(jnp.maximum(x, 0.0))


def _vaccinate_one(i, order, grams, rho_hat_i, beta):
    """Task i's coefficients C_i [K, T] and its new rho_hat_i [T, K]."""
    num_groups, num_tasks, _ = grams.shape
    g_norms = _sqrt0(jnp.diagonal(grams, axis1=1, axis2=2))  # [K, T]

    def visit(pos, carry):
        c, rho_hat_i = carry
        j = order[pos]
        dot = jnp.einsum("kt,kt->k", c, grams[:, :, j])  # pc_i[S] . g_j[S]
        pc_norm = _sqrt0(jnp.einsum("kt,kts,ks->k", c, grams, c))
        rho = jnp.clip(dot / (pc_norm * g_norms[:, j] + EPS), -1.0, 1.0)
        target = rho_hat_i[j]
        step = (
            pc_norm
            * (target * _sqrt0(1 - rho**2) - rho * _sqrt0(1 - target**2))
            / (g_norms[:, j] * _sqrt0(1 - target**2) + EPS)
        )
        c = c.at[:, j].add(jnp.where(rho < target, step, 0.0))
        rho_hat_i = rho_hat_i.at[j].set((1 - beta) * target + beta * rho)
        return c, rho_hat_i

    start = jnp.zeros((num_groups, num_tasks), grams.dtype).at[:, i].set(1.0)
    return jax.lax.fori_loop(0, num_tasks - 1, visit, (start, rho_hat_i))


def other_task_orders(rng, num_tasks: int):
    """[T, T - 1] int32: row i, a random order of the tasks other than i."""
    keys = jax.random.split(rng, num_tasks)
    others = jnp.array(
        [[j for j in range(num_tasks) if j != i] for i in range(num_tasks)]
    )
    return jax.vmap(jax.random.permutation)(keys, others)


def gradvac_coefficients(grams, orders, rho_hat, beta):
    """(C [T, K, T] with pc_i[S_k] = sum_j C[i, k, j] g_j[S_k], new rho_hat)."""
    num_tasks = grams.shape[1]
    return jax.vmap(_vaccinate_one, in_axes=(0, 0, None, 0, None))(
        jnp.arange(num_tasks), orders, grams, rho_hat, beta
    )


def gradvac_init(num_tasks: int, *, group_type: int, layout=None):
    """No params; state {"rho_hat": zeros [T, T, K]}."""
    if layout is None:
        raise ValueError(
            "gradvac needs the shared parameters' layout: call "
            "init(num_tasks, layout=((module path, size), ...))"
        )
    num_groups = len(group_sizes(layout, group_type))
    return {}, {"rho_hat": jnp.zeros((num_tasks, num_tasks, num_groups), jnp.float32)}


def gradvac_aggregate(
    params, state, losses, grads, *, beta, group_type, layout, step=None, rng
):
    """One GradVac step on grads [T, P] (see the module docstring)."""
    del params, losses, step
    sizes = group_sizes(layout, group_type)
    num_tasks, num_params = grads.shape
    if sum(sizes) != num_params:
        raise ValueError(f"gradvac: layout covers {sum(sizes)} of {num_params} columns")
    grams = group_grams(grads, sizes)
    orders = other_task_orders(rng, num_tasks)
    coeffs, rho_hat = gradvac_coefficients(grams, orders, state["rho_hat"], beta)
    per_group = coeffs.sum(0)  # [K, T]: d[S_k] = sum_j per_group[k, j] g_j[S_k].
    update = jnp.concatenate(
        [per_group[k] @ grads[:, s] for k, s in enumerate(_slices(sizes))]
    )
    ones = jnp.ones((num_tasks,), grads.dtype)
    return GradOutput(
        update=update,
        weights=ones,
        head_weights=ones,
        state={"rho_hat": rho_hat},
        param_grads={},
        rep_coeffs=ones,
    )


def make_gradvac(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    beta, group_type = float(cfg.gradvac_beta), cfg.gradvac_group_type
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"weighting.gradvac_beta={beta}: must be in [0, 1]")
    if group_type not in GROUP_TYPES:
        raise ValueError(
            f"weighting.gradvac_group_type={group_type!r}: choose 0 (whole model), "
            "1 (per module) or 2 (per parameter tensor)"
        )
    init = functools.partial(gradvac_init, group_type=int(group_type))
    aggregate = functools.partial(
        gradvac_aggregate, beta=beta, group_type=int(group_type)
    )
    return Method("gradvac", init, aggregate=aggregate, needs_layout=True)


BUILDERS = {"gradvac": make_gradvac}
