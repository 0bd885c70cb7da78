"""Aligned-MTL (Senushkin et al. 2023), as LibMTL computes it.

With M = G G^T = V diag(lambda) V^T, keep the eigenpairs with
lambda > tol = lambda_max * T * eps(float32) (the rank R), and

  B = sqrt(lambda_min,kept) V diag(lambda^{-1/2}) V^T  (kept pairs only),
  alpha = column sums of B,  update = alpha^T G.

B G has orthogonal rows of equal norm sqrt(lambda_min,kept) (on the kept
subspace): the aligned task gradients have condition number 1. The rank is
data-dependent, so pairs are masked rather than sliced (fixed shapes).
LibMTL's `torch.symeig` is gone from PyTorch; `eigh` is its replacement.

Guard (LibMTL raises an IndexError): with every gradient zero nothing is kept;
we return alpha = 0 (the update is zero anyway).
"""

from typing import Sequence

import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method, no_params


def aligned_matrix(gram):
    """The aligning matrix B [T, T] of a Gram matrix M = G G^T [T, T]."""
    num_tasks = gram.shape[0]
    lam, vecs = jnp.linalg.eigh(gram)  # Ascending.
    tol = lam.max() * num_tasks * jnp.finfo(jnp.float32).eps
    kept = lam > tol
    lam_min = jnp.min(jnp.where(kept, lam, jnp.inf))
    lam_min = jnp.where(kept.any(), lam_min, 0.0)
    inv_sqrt = jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, lam, 1.0)), 0.0)
    return jnp.sqrt(lam_min) * (vecs * inv_sqrt[None, :]) @ vecs.T


def aligned_mtl_aggregate(params, state, losses, grads, *, step=None, rng=None):
    """One Aligned-MTL step (see the module docstring). Returns GradOutput."""
    del params, losses, step, rng
    alpha = aligned_matrix(grads @ grads.T).sum(axis=0)
    return GradOutput(
        update=alpha @ grads,
        weights=alpha,
        head_weights=jnp.ones_like(alpha),
        state=state,
        param_grads={},
        rep_coeffs=alpha,
    )


def make_aligned_mtl(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del cfg, tasks, steps_per_epoch
    return Method(
        "aligned_mtl", no_params, aggregate=aligned_mtl_aggregate, rep_grad_ok=True
    )


BUILDERS = {"aligned_mtl": make_aligned_mtl}
