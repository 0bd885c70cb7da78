"""GradDrop, gradient sign dropout (Chen et al. 2020), as LibMTL computes it.

GradDrop acts on the shared representation z [B, D] only (LibMTL refuses it
in parameter mode). With R_t [B, D] task t's per-sample gradient of its loss
with respect to z, and X = z:

  s_t = sum_b R_t * sign(X)                      (the "signed" gradient, [D])
  P = (1 + sum_t s_t / (sum_t |s_t| + 1e-7)) / 2  (positive-sign purity, [D])
  U ~ uniform[0, 1) per feature, one draw per step, shared across the batch
  M_t = [P > U] [s_t > 0] + [P < U] [s_t < 0]
  the trunk receives sum_t R_t * (leak + (1 - leak) M_t), per sample.

So for each feature a sign is drawn with the probability of its purity, and
the tasks whose signed gradient disagrees with it are dropped there. The heads
get their own gradients unchanged, and the loss is the plain sum (weights 1,
as LibMTL's equal weighting; its `backward()` returns None).

The train step hands `aggregate` the matrix S [T, D] of the s_t (because
`signed_rep_grads` is set) and applies the returned per-feature coefficients
[T, D] to the per-sample R_t. Randomness: LibMTL's torch.rand_like; ours is
jax.random.uniform from the step's key, the same distribution, not the same
draws.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method, no_params

EPS = 1e-7  # LibMTL's guard in sum_t |s_t| + 1e-7.


def purity(signed):
    """P [D]: (1 + sum_t s_t / (sum_t |s_t| + 1e-7)) / 2, in [0, 1]."""
    return 0.5 * (1.0 + signed.sum(0) / (jnp.abs(signed).sum(0) + EPS))


def keep_masks(signed, uniform):
    """M [T, D]: 1 where task t's signed gradient agrees with the drawn sign.

    Args:
      signed: [T, D] the s_t.
      uniform: [D] the step's U.
    """
    p = purity(signed)
    positive = (p > uniform) & (signed > 0)
    negative = (p < uniform) & (signed < 0)
    return (positive | negative).astype(signed.dtype)


def graddrop_aggregate(params, state, losses, grads, *, leak, step=None, rng=None):
    """One GradDrop step on S = grads [T, D] (see the module docstring)."""
    del params, step
    uniform = jax.random.uniform(rng, grads.shape[1:], grads.dtype)
    masks = keep_masks(grads, uniform)
    coeffs = leak + (1.0 - leak) * masks
    ones = jnp.ones_like(losses)
    return GradOutput(
        update=(coeffs * grads).sum(0),
        weights=ones,
        head_weights=ones,
        state=state,
        param_grads={},
        rep_coeffs=coeffs,
    )


def make_graddrop(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    leak = float(cfg.graddrop_leak)
    if not 0.0 <= leak <= 1.0:
        raise ValueError(f"weighting.graddrop_leak={leak}: must be in [0, 1]")

    def aggregate(params, state, losses, grads, *, step=None, rng=None):
        return graddrop_aggregate(
            params, state, losses, grads, leak=leak, step=step, rng=rng
        )

    return Method(
        "graddrop",
        no_params,
        aggregate=aggregate,
        rep_grad_ok=True,
        rep_grad_only=True,
        signed_rep_grads=True,
    )


BUILDERS = {"graddrop": make_graddrop}
