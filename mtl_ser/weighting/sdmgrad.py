"""SDMGrad, stochastic direction-oriented multi-objective gradient descent
(Xiao et al. 2023), as LibMTL computes it.

The step gives the method three independent batches (`batches_per_step` = 3):
per-task gradients zeta = G0, xi1 = G1, xi2 = G2 [3, T, P]. With lambda_s =
`sdmgrad_lamda` and n = `sdmgrad_niter`:

  GG = G1 G2^T,  s = mean_t sqrt(max(GG_tt, 0)),  GG <- GG / (s^2 + 1e-8),
  q = mean of GG over its second index,

then w (state, 1/T at first) takes n steps of a fresh SGD with learning rate 5
and momentum 0.5 on the gradient GG w + lambda_s q (buffer b = gradient at the
first step, then b = 0.5 b + gradient), each followed by the Euclidean
projection on the simplex (returning w unchanged if it is exactly on it), and

  update = (sum_t w_t zeta_t + lambda_s mean_t zeta_t) / (1 + lambda_s).

The heads keep the sum of their gradients over the three batches (head
weights 1; LibMTL does not divide by 3 here, unlike MoDo). LibMTL returns no
weights; we report w. Not usable with representation gradients.

Chaotic by construction: a step size of 5 amplifies rounding about 1e6 times
over 20 iterations (measured on LibMTL), so only a fresh first step can be
compared with a float64 transcription digit for digit; later w agree with it
in distribution, not in digits. Projection: MGDA's sort-based routine in
float32 (LibMTL's runs in float64).
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method
from mtl_ser.weighting.mgda import combine_rows, project_to_simplex

BATCHES = 3  # Batches per step.
LEARNING_RATE, MOMENTUM = 5.0, 0.5  # LibMTL's inner SGD.
_EPS = 1e-8


def sdmgrad_init(num_tasks: int):
    """No params; state {"w": 1/T [T]}."""
    return {}, {"w": jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)}


def _project(w):
    """Proj_simplex(w), or w itself when it is exactly on the simplex."""
    on_simplex = (w.sum() == 1.0) & jnp.all(w >= 0)
    return jnp.where(on_simplex, w, project_to_simplex(w))


def sdmgrad_weights(gg, w, *, lamda, iterations):
    """n projected momentum-SGD steps on w for the scaled GG [T, T]."""
    q = gg.mean(1)

    def sgd_step(i, carry):
        w, buffer = carry
        grad = gg @ w + lamda * q
        buffer = jnp.where(i == 0, grad, MOMENTUM * buffer + grad)
        return _project(w - LEARNING_RATE * buffer), buffer

    return jax.lax.fori_loop(0, iterations, sgd_step, (w, jnp.zeros_like(w)))[0]


def sdmgrad_aggregate(
    params, state, losses, grads, *, lamda, iterations, step=None, rng=None
):
    """One SDMGrad step on grads [3, T, P] (see the module docstring)."""
    del params, losses, step, rng
    gg = grads[1] @ grads[2].T
    scale = jnp.sqrt(jnp.maximum(jnp.diag(gg), 0.0)).mean()
    gg = gg / (scale**2 + _EPS)
    w = sdmgrad_weights(gg, state["w"], lamda=lamda, iterations=iterations)
    num_tasks = w.shape[0]
    coeffs = (w + lamda / num_tasks) / (1.0 + lamda)
    ones = jnp.ones_like(w)
    return GradOutput(
        update=combine_rows(coeffs, grads[0]),
        weights=w,
        head_weights=ones,
        state={"w": w},
        param_grads={},
        rep_coeffs=ones,
    )


def make_sdmgrad(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    lamda, iterations = float(cfg.sdmgrad_lamda), cfg.sdmgrad_niter
    if not lamda >= 0:
        raise ValueError(f"weighting.sdmgrad_lamda={lamda}: must be >= 0")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"weighting.sdmgrad_niter={iterations!r}: must be an int >= 1")
    aggregate = functools.partial(
        sdmgrad_aggregate, lamda=lamda, iterations=int(iterations)
    )
    return Method(
        "sdmgrad", sdmgrad_init, aggregate=aggregate, batches_per_step=BATCHES
    )


BUILDERS = {"sdmgrad": make_sdmgrad}
