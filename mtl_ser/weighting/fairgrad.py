"""FairGrad (Ban & Ji 2024): alpha-fair task weights, as LibMTL computes them.

With K = G G^T and alpha = `fairgrad_alpha`, the weights x > 0 solve

  K x = x^(-1/alpha)  (elementwise),

i.e. d = G^T x has d . g_t = x_t^(-1/alpha) for every task. LibMTL finds x
with scipy's least_squares on x -> K x - x^(-1/alpha) from x0 = 1/T with
bounds (0, inf), in float64 (converged to ~1e-10), then back-propagates
sum_t x_t L_t: update = sum_t x_t g_t, the task heads get x, and x is
reported. With alpha = 1 this is Nash-MTL's fixed point x (K x) = 1, without
its clipping or fallback. Not usable with representation gradients.

The solver. K x = x^(-1/alpha) is the stationarity condition of the strictly
convex (on x > 0)

  f(x) = x^T K x / 2 + sum_t h(x_t),  h'(x) = -x^(-1/alpha),
  h(x) = -log x (alpha = 1),  h(x) = -x^p / p, p = (alpha - 1) / alpha (else)

(h'' = x^(-1/alpha - 1) / alpha > 0). Its minimiser exists, and is the
unique solution, iff no v >= 0, v != 0 has G^T v = 0 (Gordan; e.g. any K
that is positive definite). We minimise f by Newton's method in jnp with a
fixed budget of `NEWTON_ITERS` = 20 steps, jit-safe:
  1. Scale: K_n = K / 2^e with 2^e near max_t K_tt (exact in float32); if
     K = c K_n then x = c^(-alpha/(alpha+1)) x_n.
  2. Start from the answer for orthogonal gradients, x_t = K_tt^(-a/(a+1))
     (a = alpha), times the c > 0 minimising f(c x) (closed form).
  3. Each step: the Newton direction dx (Jacobi-scaled LU solve plus one
     step of iterative refinement); of the candidates x + s dx and
     x exp(s dx / x), s = 1, 1/2, ..., 2^-29 (`STEP_FRACTIONS`), the one
     with the lowest f. The second family moves x_t over decades in one step
     and stays positive, which alpha far from 1 needs. f(x') - f(x) is
     computed from its small terms (log1p / expm1 of x'/x - 1), not as a
     difference of two values of f. Near the solution rounding hides the
     decrease of f, so the full Newton step is taken instead whenever it
     halves the residual (or, if no candidate lowers f, lowers it).
  4. K x in the gradient (and the refinement's residual) is computed to
     about twice float32 precision (`mgda.accurate_matvec`): with conflicting
     tasks (K x)_t is a small difference of large terms, and a float32
     product loses exactly the digits that decide x.
  5. The iterate with the smallest residual max_t |(K x)_t x_t^(1/a) - 1|
     is the answer.
Measured in float32 against a float64 Newton solve of the same float32 K:
300 random draws per alpha in {0.5, 1, 2, 5} and kind, T in {2, 3, 5, 8}
(75 each), P = 32, overall scale 1e-3 to 1e3, task-gradient norms
log-uniform over three decades ("spread", cond(K) up to 1.3e6, median 6e3);
"conflicting": alternate tasks also carry +1 and -0.9 times a shared
direction of three times the median norm (cond(K) up to 2.4e6, median 5e2).
  * spread: max_t |x_t / x*_t - 1| <= 4.8e-7 (alpha <= 2), 2.3e-6 (alpha 5);
    relative error of d <= 4.3e-7.
  * conflicting: max_t |x_t / x*_t - 1| <= 1.4e-4, 4.7e-5, 7.0e-4, 7.5e-5
    (alpha 0.5, 1, 2, 5), medians <= 2.3e-7; relative error of d <=
    3.6e-5, 1.9e-5, 2.2e-4, 3.8e-6. The worst draws have cond(K) 1e5 to
    1e6: there (K x)_t is orders of magnitude smaller than its terms, and
    rounding x to float32 alone moves the residual by up to ~1e-2.
  * at most 12 Newton steps were needed; no draw fell back.
Without the accurate K x, 14 of the 300 conflicting draws (alpha = 1) were
off by more than 1e-4, up to O(1), 3 of them falling back. The test file
checks a slice of this (`test_ill_conditioned_conflicts_match_float64`).

Departures from LibMTL (where it has no answer):
* A task with a zero gradient (squared norm <= 1e-12 of the largest) makes
  (K x)_t = 0: no finite x_t solves it, and LibMTL returns whatever its
  solver stopped at (d does not depend on it). We solve for the other tasks
  alone (a zero gradient does not couple to them) and give that task the
  largest weight among the others: finite, on their scale, and ordered as
  the equation wants (a smaller gradient gets a larger weight). All weights
  are 1 if every gradient is zero.
* Where no solution exists (e.g. g_2 = -g_1), LibMTL's least_squares
  returns some iterate with a large residual. We accept a solve only if
  (K x)_t > 0 and |(K x)_t - x_t^(-1/alpha)| <= 1e-3 x_t^(-1/alpha) +
  1e-5 (|K| x)_t for every task (the second term: what float32 x can
  resolve, see above), and otherwise fall back to x_t =
  K_tt^(-alpha/(alpha+1)), each task weighted as if alone: for g_2 = -g_1
  that gives d = 0, no step.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from mtl_ser.weighting.base import GradOutput, Method, no_params
from mtl_ser.weighting.mgda import accurate_matvec, combine_rows, gram

NEWTON_ITERS = 20
STEP_FRACTIONS = 30  # Step fractions tried: 1, 1/2, ..., 2^-29.
# A task counts as having a zero gradient below this fraction of the largest
# squared gradient norm (a norm ratio of 1e-6).
ZERO_GRAD_RTOL = 1e-12
# Accept a solve with |(K x)_t - x_t^(-1/alpha)| <= RESIDUAL_TOL x_t^(-1/alpha)
# + BACKWARD_TOL (|K| x)_t for every task: within 1e-3 of the solution of a K
# perturbed by 1e-5 relatively, as far as float32 x can get (rounding x_s
# alone moves (K x)_t by up to 6e-8 (|K| x)_t, and conflicting tasks make
# (K x)_t orders of magnitude smaller than that).
RESIDUAL_TOL = 1e-3
BACKWARD_TOL = 1e-5


def _gradient(kn, x, alpha: float):
    """(grad f = K x - x^(-1/alpha), x^(-1/alpha)), K x accurately."""
    xm = x ** (-1.0 / alpha)
    hi, lo = accurate_matvec(kn, x)
    return (hi - xm) + lo, xm


def fairgrad_residual(k, x, alpha: float):
    """max_t |(K x)_t x_t^(1/alpha) - 1|: 0 at the solution (scale-free)."""
    grad, xm = _gradient(k, x, alpha)
    return jnp.max(jnp.abs(grad / xm))


def _bregman(x, u, p: float):
    """h(x + u x) - h(x) - h'(x) u x for each task, from u (> -1) directly."""
    if p == 0.0:  # h = -log x.
        return u - jnp.log1p(u)
    return x**p * (u - jnp.expm1(p * jnp.log1p(u)) / p)


def _start(kn, active, alpha: float):
    """x_t = K_tt^(-alpha/(alpha+1)), times the c minimising f(c x).

    Only the active tasks are rescaled; the others (identity rows) start at 1.
    """
    x = jnp.where(active, jnp.diag(kn) ** (-alpha / (alpha + 1.0)), 0.0)
    # f(c x) = c^2 q / 2 - c^p S / p (or - T log c): c = (S / q)^(a / (a + 1)).
    p = (alpha - 1.0) / alpha
    quad = x @ kn @ x
    total = jnp.sum(jnp.where(active, x, 1.0) ** p * active)
    c = (total / jnp.where(quad > 0, quad, 1.0)) ** (alpha / (alpha + 1.0))
    return jnp.where(active, jnp.where(quad > 0, c, 1.0) * x, 1.0)


def _newton_step(kn, x, alpha: float):
    """One Newton step on f, line-searched over two families of candidates."""
    p = (alpha - 1.0) / alpha
    grad, xm = _gradient(kn, x, alpha)
    curv = xm / (alpha * x)  # h''(x)
    s = 1.0 / jnp.sqrt(jnp.diag(kn) + curv)  # Jacobi scaling for the solve.
    lu = jax.scipy.linalg.lu_factor(s[:, None] * (kn + jnp.diag(curv)) * s)
    dx = s * jax.scipy.linalg.lu_solve(lu, -s * grad)
    # One step of iterative refinement, H dx to about twice float32 precision.
    hi, lo = accurate_matvec(kn, dx)
    dx = dx + s * jax.scipy.linalg.lu_solve(lu, -s * (grad + (hi + curv * dx) + lo))
    dx = jnp.where(jnp.isfinite(dx), dx, 0.0)
    fractions = 0.5 ** jnp.arange(STEP_FRACTIONS, dtype=x.dtype)  # [J]
    rel = fractions[:, None] * (dx / x)  # [J, T]
    # x + s dx, and x exp(s dx / x) (positive, big relative moves): x (1 + u).
    u = jnp.concatenate([rel, jnp.expm1(rel)])  # [2J, T]
    inside = jnp.all(u > -0.999, axis=1)
    u = jnp.where(inside[:, None], u, 0.0)
    delta = u * x
    # f(x + delta) - f(x), from its small terms.
    change = (
        delta @ grad
        + 0.5 * jnp.einsum("js,st,jt->j", delta, kn, delta)
        + _bregman(x, u, p).sum(1)
    )
    change = jnp.where(inside & jnp.isfinite(change), change, jnp.inf)
    best = jnp.argmin(change)
    # Near the solution rounding hides the decrease of f: there, take the
    # full Newton step whenever it lowers the residual (by half: at once).
    full = x + delta[0]
    res, res_full = jnp.max(jnp.abs(grad / xm)), fairgrad_residual(kn, full, alpha)
    res_full = jnp.where(inside[0], res_full, jnp.inf)
    searched = jnp.where(change[best] < 0, x + delta[best], x)
    fallback = jnp.where(res_full < res, full, searched)
    return jnp.where(
        res_full < 0.5 * res, full, jnp.where(change[best] < 0, searched, fallback)
    )


def fairgrad_solve(k, alpha: float, *, iterations: int = NEWTON_ITERS):
    """FairGrad's x > 0 with K x = x^(-1/alpha).

    Args:
      k: [T, T] K = G G^T.
      alpha: the fairness exponent (> 0).
      iterations: the fixed Newton budget.

    Returns:
      (x [T], ok): ok is False where we fell back (module docstring).
    """
    num_tasks = k.shape[0]
    diag = jnp.diag(k)
    active = diag > ZERO_GRAD_RTOL * diag.max()  # All False if G = 0.
    # A power of two near max_t K_tt: K / scale is exact.
    scale = jnp.ldexp(jnp.ones((), k.dtype), jnp.frexp(diag.max())[1])
    scale = jnp.where(diag.max() > 0, scale, 1.0)
    both = active[:, None] & active[None, :]
    # Zero-gradient tasks decouple: identity rows, solved by x_t = 1.
    kn = jnp.where(both, k / scale, jnp.eye(num_tasks, dtype=k.dtype))
    x = _start(kn, active, alpha)

    def body(_, carry):  # Keeps the iterate with the smallest residual.
        x, best, best_res = carry
        res = fairgrad_residual(kn, x, alpha)
        lower = res < best_res  # False for NaN.
        best, best_res = jnp.where(lower, x, best), jnp.where(lower, res, best_res)
        return _newton_step(kn, x, alpha), best, best_res

    inf = jnp.asarray(jnp.inf, k.dtype)
    x, best, best_res = jax.lax.fori_loop(0, iterations, body, (x, x, inf))
    x = jnp.where(fairgrad_residual(kn, x, alpha) < best_res, x, best)
    grad, xm = _gradient(kn, x, alpha)
    slack = RESIDUAL_TOL * xm + BACKWARD_TOL * (jnp.abs(kn) @ x)
    # (K x)_t > 0 for all t: else no solution exists (Gordan: some v >= 0,
    # v != 0 has G^T v = 0, so v . K x = 0 for every x), whatever the slack.
    positive = jnp.all(grad + xm > 0)
    ok = jnp.all(x > 0) & positive & jnp.all(jnp.abs(grad) <= slack)
    power = -alpha / (alpha + 1.0)
    solved = x * scale**power
    alone = jnp.where(active, diag, 1.0) ** power  # Orthogonal-gradient answer.
    x = jnp.where(ok, solved, alone)
    largest = jnp.max(jnp.where(active, x, -jnp.inf))
    return jnp.where(active, x, jnp.where(active.any(), largest, 1.0)), ok


def fairgrad_aggregate(
    params, state, losses, grads, *, alpha: float, step=None, rng=None
):
    """One FairGrad step (see the module docstring). Returns GradOutput."""
    del params, losses, step, rng
    x, _ = fairgrad_solve(gram(grads), alpha)
    return GradOutput(
        update=combine_rows(x, grads),
        weights=x,
        head_weights=x,
        state=state,
        param_grads={},
        rep_coeffs=jnp.ones_like(x),
    )


def make_fairgrad(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    alpha = float(cfg.fairgrad_alpha)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"weighting.fairgrad_alpha={cfg.fairgrad_alpha}: must be > 0")
    aggregate = functools.partial(fairgrad_aggregate, alpha=alpha)
    return Method("fairgrad", no_params, aggregate=aggregate)


# name -> builder(weighting config, tasks, steps_per_epoch) -> Method.
BUILDERS = {"fairgrad": make_fairgrad}
