"""GradNorm (Chen et al. 2018), as LibMTL computes it.

The weights are w = T softmax(s) with learnable s (`loss_scale`, init 1), so
they always sum to T. Epoch 0 is equal weighting. From epoch 1 on, with g_t the
gradient of task t on ALL shared parameters (not the paper's last shared
layer; in representation mode the batch-summed gradient of the embedding):

  N_t = ||w_t g_t||,  r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0)),
  target_t = stopgrad(mean(N) r_t^alpha),  L_grad = sum_t |N_t - target_t|,

where L_t(0) is task t's MEAN loss over epoch 0 (LibMTL's train_loss_buffer,
not the first batch's loss). s is stepped by the main optimizer with
dL_grad/ds = J_w^T (sign(N - target) ||g||), J_w = T (diag p - p p^T),
p = softmax(s); the shared update is sum_t w_t g_t with w from before that step.

Departures from LibMTL, both guards for cases where it fails or stalls:
* Epoch 0 in representation mode: LibMTL back-propagates sum_t L_t from the
  detached copy of the embedding, so the trunk gets no gradient for the whole
  first epoch. We return rep_coeffs = ones there (plain equal weighting).
* A zero epoch-0 mean loss (L_t(0) = 0) or all-zero relative losses would give
  0/0 in LibMTL; we treat such a ratio as 1 (see `_relative_rates`).
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting import history
from mtl_ser.weighting.base import GradOutput, Method


def gradnorm_init(num_tasks: int):
    """params {"loss_scale": ones [T]}; state {"history": per-epoch means}."""
    params = {"loss_scale": jnp.ones((num_tasks,), jnp.float32)}
    return params, {"history": history.init(num_tasks)}


def _relative_rates(losses, first_means):
    """r_t = L~_t / mean(L~), L~_t = L_t / L_t(0); a 0/0 ratio counts as 1."""
    ratio = jnp.where(
        first_means > 0, losses / jnp.where(first_means > 0, first_means, 1.0), 1.0
    )
    mean = ratio.mean()
    return jnp.where(mean > 0, ratio / jnp.where(mean > 0, mean, 1.0), 1.0)


def gradnorm_scale_grad(scale, losses, first_means, grads, *, alpha):
    """Analytic gradient of L_grad = sum_t |N_t - target_t| w.r.t. s.

    Args:
      scale: [T] the learnable s.
      losses: [T] the batch losses.
      first_means: [T] the epoch-0 mean losses L_t(0).
      grads: [T, P] task gradients.
      alpha: the restoring-force exponent.

    Returns:
      (dL_grad/ds [T], N [T], target [T]).
    """
    num_tasks = scale.shape[0]
    p = jax.nn.softmax(scale)
    norms = jnp.linalg.norm(grads, axis=1)  # ||g_t||
    n = num_tasks * p * norms  # N_t = ||w_t g_t||, w_t > 0.
    target = n.mean() * _relative_rates(losses, first_means) ** alpha
    dw = jnp.sign(n - target) * norms  # dL_grad / dw
    ds = num_tasks * (p * dw - p * jnp.dot(p, dw))  # J_w^T dw, J_w symmetric.
    return ds, n, target


def gradnorm_aggregate(
    params, state, losses, grads, *, alpha, steps_per_epoch, step, rng=None
):
    """One GradNorm step (see the module docstring). Returns GradOutput."""
    del rng
    scale = params["loss_scale"]
    num_tasks = scale.shape[0]
    hist = history.start_step(state["history"], step, steps_per_epoch)
    warm = history.epoch(step, steps_per_epoch) >= 1
    ds, _, _ = gradnorm_scale_grad(scale, losses, hist["first"], grads, alpha=alpha)
    weights = jnp.where(warm, num_tasks * jax.nn.softmax(scale), 1.0)
    return GradOutput(
        update=weights @ grads,
        weights=weights,
        head_weights=jnp.ones_like(weights),
        state={"history": history.add(hist, losses)},
        param_grads={"loss_scale": jnp.where(warm, ds, 0.0)},
        rep_coeffs=weights,
    )


def make_gradnorm(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks
    aggregate = functools.partial(
        gradnorm_aggregate,
        alpha=float(cfg.gradnorm_alpha),
        steps_per_epoch=int(steps_per_epoch),
    )
    return Method("gradnorm", gradnorm_init, aggregate=aggregate, rep_grad_ok=True)


BUILDERS = {"gradnorm": make_gradnorm}
