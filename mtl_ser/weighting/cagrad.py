"""CAGrad, conflict-averse gradient descent (Liu et al. 2021), as LibMTL does it.

With K = G G^T, c_alpha = `cagrad_alpha` and ||g0|| = sqrt(mean(K) + 1e-8)
(the norm of the mean gradient), c = c_alpha ||g0|| + 1e-8 and

  x = argmin_{x in simplex} x^T K 1/T + c sqrt(x^T K x + 1e-8),
  g_w = sum_t x_t g_t,  lambda = c / (||g_w|| + 1e-8),
  d = (mean_t g_t + lambda g_w) / {1, 1 + c_alpha^2, 1 + c_alpha}[rescale].

The weights reported are x. Everything but d itself is computed on the T x T
Gram matrix (||g_w||^2 = x^T K x), so the cost is O(T^2 P) for K plus O(T P).

The solver. LibMTL calls scipy's SLSQP from x0 = 1/T with default tolerances
on the unscaled objective: x is good to ~1e-4 when the gradients have norm ~1,
and far off (errors of O(0.1) in x) when K is large, since its tolerances are
absolute. We solve the same problem in jnp with a fixed budget, jit-safe:

  1. Scale: divide the objective by s = max(max_t K_tt, 1e-8); the minimiser
     is unchanged and the scaled problem has entries of order 1.
  2. `FISTA_ITERS` = 100 iterations of monotone accelerated projected gradient
     (FISTA with restarts) with a vectorised backtracking over
     `STEP_CANDIDATES` = 12 step sizes per iteration (2 eta, eta, ..., each
     half the previous; capped at `MAX_STEP`). Gradients and objective
     *differences* are taken on the simplex's tangent space (z - y, not
     f(z) - f(y)), so float32 rounding does not swamp them.
  3. `NEWTON_ITERS` = 8 damped Newton steps on the KKT system of the current
     support (plus any coordinate whose reduced cost is negative), each
     accepted only if it lowers the KKT residual (a gradient-only test, exact
     to float32 rounding of the gradient).

Measured in float32 against a tight float64 solve on the same float32 K
(T = 2, 3, 5, P = 20, a quarter of the draws with a strongly conflicting
pair, overall scale 1e-3 to 1e3, task-gradient norms lognormal with sigma 1
to 2; 1800 draws): where the norms are within 100x of each other, max
|x - x*| <= 2e-6, and the relative error of d <= 3e-7 (sigma-1 draws).
SLSQP as LibMTL calls it: |x - x*| up to 8.8e-4 at unit scale, O(1) at
other scales. Beyond ~100x float32 cannot always resolve the small tasks'
share: a few draws (large tasks conflicting) are off by up to 0.2 in x, as
SLSQP is.
The test file checks |x - x*| <= 1e-5 on well-posed draws.

Guards (LibMTL would give NaN): x^T K x and mean(K) are clamped at 0 before
the square roots, since float32 rounding can make them slightly negative.
"""

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import GradOutput, Method, no_params
from mtl_ser.weighting.mgda import combine_rows, gram, project_to_simplex

FISTA_ITERS = 100
STEP_CANDIDATES = 12
MAX_STEP = 1e6  # Step sizes (in the scaled problem) stop growing here.
NEWTON_ITERS = 8
NEWTON_FRACTIONS = 8  # Newton step fractions tried: 1, 1/2, ..., 1/128.
EPS = 1e-8  # LibMTL's epsilons (under the square roots and in lambda).
RESCALES = (0, 1, 2)


class _Problem(NamedTuple):
    """min_x b.x + c sqrt(x^T k x + eps) over the simplex (scaled)."""

    k: jax.Array  # [T, T]
    b: jax.Array  # [T]
    c: jax.Array  # scalar
    eps: jax.Array  # scalar


def _scaled_problem(k, c_alpha) -> _Problem:
    """LibMTL's objective divided by s = max diag(K) (same minimiser)."""
    c = c_alpha * jnp.sqrt(jnp.maximum(k.mean(), 0.0) + EPS) + EPS
    s = jnp.maximum(jnp.diag(k).max(), EPS)
    k_s = k / s
    return _Problem(k_s, k_s.mean(1), c / jnp.sqrt(s), EPS / s)


def _radius(p: _Problem, x):
    return jnp.sqrt(jnp.maximum(x @ p.k @ x, 0.0) + p.eps)


def _gradient(p: _Problem, x, r):
    return p.b + p.c * (p.k @ x) / r


def _difference(p: _Problem, z, y, r_z, r_y):
    """f(z) - f(y), from z - y (no cancellation of two large values)."""
    d = z - y
    d = d - d.mean()  # Both lie on the simplex: drop the rounding off it.
    return p.b @ d + p.c * (d @ p.k @ (z + y)) / (r_z + r_y)


def _kkt_residual(p: _Problem, x):
    """max violation of: g_i = mu on the support, g_i >= mu off it."""
    g = _gradient(p, x, _radius(p, x))
    support = x > 0
    mu = jnp.where(support, g, 0.0).sum() / jnp.maximum(support.sum(), 1)
    return jnp.where(support, jnp.abs(g - mu), jnp.maximum(mu - g, 0.0)).max()


def _fista_step(p: _Problem, carry):
    """One monotone FISTA iteration with backtracking over STEP_CANDIDATES."""
    x, r_x, y, t, eta = carry
    r_y = _radius(p, y)
    g_y = _gradient(p, y, r_y)
    g_y = g_y - g_y.mean()  # Same projections; keeps y - eta g_y small.
    etas = eta * 2.0 ** (1 - jnp.arange(STEP_CANDIDATES, dtype=y.dtype))
    cands = jax.vmap(project_to_simplex)(y - etas[:, None] * g_y)  # [J, T]
    r_c = jax.vmap(functools.partial(_radius, p))(cands)
    decrease = jax.vmap(lambda z, r_z: _difference(p, z, y, r_z, r_y))(cands, r_c)
    d = cands - y
    d = d - d.mean(1, keepdims=True)
    ok = decrease <= d @ g_y + (d * d).sum(1) / (2 * etas)  # Descent lemma.
    pick = jnp.where(ok.any(), jnp.argmax(ok), STEP_CANDIDATES - 1)
    z, r_z, eta = cands[pick], r_c[pick], jnp.minimum(etas[pick], MAX_STEP)
    better = _difference(p, z, x, r_z, r_x) <= 0
    x_new = jnp.where(better, z, x)
    t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    y_new = x_new + (t / t_new) * (z - x_new) + ((t - 1) / t_new) * (x_new - x)
    # No progress: restart the momentum from the best point.
    y_new = jnp.where(better, y_new, x_new)
    t_new = jnp.where(better, t_new, 1.0)
    return x_new, jnp.where(better, r_z, r_x), y_new, t_new, eta


def _newton_step(p: _Problem, x):
    """A damped Newton step on the KKT system of the (widened) support."""
    num = x.shape[0]
    r = _radius(p, x)
    u = p.k @ x
    g = p.b + p.c * u / r
    support = x > 0
    mu = jnp.where(support, g, 0.0).sum() / jnp.maximum(support.sum(), 1)
    support = support | (g < mu)  # Let coordinates that want in enter.
    hess = p.c * (p.k / r - jnp.outer(u, u) / r**3)
    eye = jnp.eye(num, dtype=x.dtype)
    s = support.astype(x.dtype)
    a = jnp.zeros((num + 1, num + 1), x.dtype)
    a = a.at[:num, :num].set(jnp.where(support[:, None] & support, hess, eye))
    a = a.at[:num, num].set(s).at[num, :num].set(s)
    rhs = jnp.concatenate([jnp.where(support, -g, 0.0), (1.0 - x.sum())[None]])
    delta = jnp.linalg.solve(a, rhs)[:num]  # Singular: non-finite, rejected.
    fractions = 0.5 ** jnp.arange(NEWTON_FRACTIONS, dtype=x.dtype)
    cands = jnp.maximum(x + fractions[:, None] * delta, 0.0)
    cands = cands / cands.sum(1, keepdims=True)
    residuals = jax.vmap(functools.partial(_kkt_residual, p))(cands)
    ok = jnp.isfinite(cands).all(1) & (residuals < _kkt_residual(p, x))
    return jnp.where(ok.any(), cands[jnp.argmax(ok)], x)


def cagrad_weights(k, c_alpha):
    """CAGrad's x: the minimiser of LibMTL's objective over the simplex.

    Args:
      k: [T, T] Gram matrix G G^T.
      c_alpha: the radius factor (LibMTL's calpha).

    Returns:
      x [T] on the simplex (see the module docstring for accuracy).
    """
    num = k.shape[0]
    p = _scaled_problem(k, c_alpha)
    x0 = jnp.full((num,), 1.0 / num, k.dtype)
    one = jnp.ones((), k.dtype)
    carry = (x0, _radius(p, x0), x0, one, one)
    x = jax.lax.fori_loop(0, FISTA_ITERS, lambda _, c: _fista_step(p, c), carry)[0]
    return jax.lax.fori_loop(0, NEWTON_ITERS, lambda _, x: _newton_step(p, x), x)


def rescale_divisor(c_alpha: float, rescale: int) -> float:
    """LibMTL's `rescale`: 0 -> 1, 1 -> 1 + c_alpha^2, 2 -> 1 + c_alpha."""
    if rescale not in RESCALES:
        raise ValueError(f"weighting.cagrad_rescale={rescale!r}: choose 0, 1 or 2")
    return (1.0, 1.0 + c_alpha**2, 1.0 + c_alpha)[int(rescale)]


def cagrad_aggregate(
    params, state, losses, grads, *, c_alpha: float, rescale: int, step=None, rng=None
):
    """CAGrad's update from per-task gradients grads [T, P].

    Returns:
      GradOutput: update d = sum_t coeffs_t g_t (module docstring), weights x,
      head weights and rep_coeffs 1.
    """
    del params, losses, step, rng
    k = gram(grads)  # [T, T]
    x = cagrad_weights(k, c_alpha)
    c = c_alpha * jnp.sqrt(jnp.maximum(k.mean(), 0.0) + EPS) + EPS
    gw_norm = jnp.sqrt(jnp.maximum(x @ k @ x, 0.0))
    lam = c / (gw_norm + EPS)
    coeffs = (1.0 / x.shape[0] + lam * x) / rescale_divisor(c_alpha, rescale)
    ones = jnp.ones_like(x)
    return GradOutput(
        update=combine_rows(coeffs, grads),
        weights=x,
        head_weights=ones,
        state=state,
        param_grads={},
        rep_coeffs=ones,
    )


def make_cagrad(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    rescale_divisor(cfg.cagrad_alpha, cfg.cagrad_rescale)  # Fails early if bad.
    aggregate = functools.partial(
        cagrad_aggregate,
        c_alpha=float(cfg.cagrad_alpha),
        rescale=int(cfg.cagrad_rescale),
    )
    return Method("cagrad", no_params, aggregate=aggregate)


# name -> builder(weighting config, tasks, steps_per_epoch) -> Method.
BUILDERS = {"cagrad": make_cagrad}
