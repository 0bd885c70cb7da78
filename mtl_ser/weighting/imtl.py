"""IMTL (Liu et al. 2021): IMTL-L loss scaling plus IMTL-G gradient balancing.

As LibMTL computes it. Learnable s (`loss_scale`, init 0) scales the losses to
e^{s_t} L_t - s_t, so their gradients are g~_t = e^{s_t} g_t; s is stepped by
the main optimizer with the gradient e^{s_t} L_t - 1 and the task heads get the
multiplier e^{s_t}. With u_t = g~_t / ||g~_t|| and, for t = 2..T, the rows
D_t = g~_1 - g~_t and U_t = u_1 - u_t:

  alpha_{2:T} = g~_1 U^T (D U^T)^{-1},  alpha_1 = 1 - sum alpha_{2:T},
  update = sum_t alpha_t g~_t,

the direction with the same projection on every u_t (alpha may be negative).
Every dot product above is an entry of K~ = diag(e^s) G G^T diag(e^s) divided
by norms, so we work on the T x T Gram matrix only.

Guards where LibMTL gives NaN or raises:
* A task whose gradient is exactly zero has no unit vector. We drop it from
  the balancing (alpha_t = 0; it adds nothing to the update anyway) and
  balance the others, with the first task of non-zero gradient as the
  reference instead of task 1. With every gradient zero the update is zero
  and alpha = (1, 0, ..., 0).
* Parallel gradients make D U^T singular (torch.inverse raises) and every
  alpha summing to 1 balances them. We solve by least squares, i.e. with
  singular values below T eps(float32) of the largest cut off, which picks
  the least-norm alpha_{2:T}; identical gradients give alpha = (1, 0, ..., 0).
  Where D U^T is better conditioned than that, this is LibMTL's solve.
"""

from typing import Sequence

import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method


def imtl_init(num_tasks: int):
    """params {"loss_scale": zeros [T]}; no state."""
    return {"loss_scale": jnp.zeros((num_tasks,), jnp.float32)}, {}


def imtl_alpha(gram):
    """IMTL-G coefficients from the Gram matrix of the (scaled) gradients.

    Args:
      gram: [T, T] K~ with K~_ij = g~_i . g~_j.

    Returns:
      alpha [T], summing to 1, with sum_t alpha_t g~_t projecting equally on
      every unit gradient u_t (zero-gradient tasks get alpha_t = 0).
    """
    num_tasks = gram.shape[0]
    eye = jnp.eye(num_tasks, dtype=gram.dtype)
    # alpha is scale-free; unit scale keeps the identity padding commensurate.
    top = jnp.max(jnp.diag(gram))
    gram = gram / jnp.where(top > 0, top, 1.0)
    sq_norms = jnp.diag(gram)
    active = sq_norms > 0
    norms = jnp.sqrt(jnp.where(active, sq_norms, 1.0))
    proj = gram / norms[None, :]  # proj[a, b] = g~_a . u_b
    ref = jnp.argmax(active)  # First task with a non-zero gradient.
    onehot = eye[ref]
    p_r = onehot @ proj  # [T] g~_ref . u_b
    p_rr = p_r @ onehot  # g~_ref . u_ref
    p_ir = proj @ onehot  # [T] g~_i . u_ref
    # (D U^T)_ij = (g~_r - g~_i).(u_r - u_j); (g~_r U^T)_j = g~_r.(u_r - u_j).
    du = p_rr - p_r[None, :] - p_ir[:, None] + proj
    rhs = p_rr - p_r
    # Rows/columns of the reference and of zero-gradient tasks decouple to
    # x_t = 0; for all-active tasks and ref = 0 this is LibMTL's system.
    keep = active & (jnp.arange(num_tasks) != ref)
    both = keep[:, None] & keep[None, :]
    du = jnp.where(both, du, eye)
    rhs = jnp.where(keep, rhs, 0.0)
    # x (D U^T) = g~_r U^T. Least squares = solve unless D U^T is singular to
    # float32 precision (parallel gradients), where it takes the least-norm x.
    x = jnp.linalg.lstsq(du.T, rhs)[0]
    return x + onehot * (1.0 - x.sum())


def imtl_aggregate(params, state, losses, grads, *, step=None, rng=None):
    """One IMTL step (see the module docstring). Returns GradOutput."""
    del step, rng
    scale = jnp.exp(params["loss_scale"])  # e^s
    gram = scale[:, None] * (grads @ grads.T) * scale[None, :]
    alpha = imtl_alpha(gram)
    coeffs = alpha * scale  # Coefficients on the raw gradients.
    return GradOutput(
        update=coeffs @ grads,
        weights=alpha,
        head_weights=scale,
        state=state,
        param_grads={"loss_scale": scale * losses - 1.0},
        rep_coeffs=coeffs,
    )


def make_imtl(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del cfg, tasks, steps_per_epoch
    return Method("imtl", imtl_init, aggregate=imtl_aggregate, rep_grad_ok=True)


BUILDERS = {"imtl": make_imtl}
