"""MGDA (Sener & Koltun 2018) and its reusable pieces, as LibMTL computes them.

MGDA takes the min-norm point of the convex hull of the (normalised) task
gradients: lambda ~ argmin_{lambda in simplex} ||sum_t lambda_t g^_t||^2, with
g^_t = g_t / n_t and n_t from `mgda_normalization` (none: 1, l2: ||g_t||,
loss: L_t, loss+: L_t ||g_t||). The solver is the Frank-Wolfe-like routine of
Sener & Koltun's code as LibMTL reproduces it (see `min_norm_solve`), written
in jnp on the Gram matrix M = G^ G^^T so it runs under jit.

LibMTL's parameter mode writes d = sum_t lambda_t g^_t (the *normalised*
gradients); its representation mode (MGDA-UB, `rep_grad`) back-propagates
sum_t lambda_t dL_t/dz with the *raw* per-sample gradients (`rep_coeffs`).
Both quirks are kept.

Departures from LibMTL, all where LibMTL would crash, spin or give NaN:
  * A normaliser with |n_t| < `NORM_FLOOR` = 1e-12 is replaced by 1 (LibMTL
    has no epsilon and divides by zero), so a task with an all-zero gradient
    or a zero loss (e.g. no labels in the batch) keeps g^_t = g_t, finite.
    A floor (n_t = 1e-12) would not do: it blows g^_t up by 1e12 and the
    float32 solver then leaves the simplex. Larger normalisers are untouched.
  * LibMTL's loop never increments its iteration counter, so an iterate that
    never meets the 1e-5 stopping rule would loop for ever (the original
    Sener-Koltun code returns None after 250). We stop after `MAX_ITER` = 250
    iterations and return the last iterate.
  * If every pair cost is >= 1e8 LibMTL's initialisation has no pair and
    crashes; we take the cheapest pair anyway. One task gives lambda = [1].

Also here for other methods: `gram` and `combine_rows` (the O(T^2 P) and
O(T P) products, at full float32 precision even on GPUs that would use TF32),
`project_to_simplex` (LibMTL's sort-based projection, also used by MoDo) and
`min_norm_two_point`.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_ser.weighting.base import GradOutput, Method, no_params

MAX_ITER = 250  # Sener-Koltun iteration budget.
STOP_CRIT = 1e-5  # Stop when the L1 change of lambda is below this.
STEP_FLOOR = 1e-7  # Step-size candidates at or below this are skipped.
NORM_FLOOR = 1e-12  # Smaller |n_t| are replaced by 1 (LibMTL has no guard).
NORMALIZATIONS = ("none", "l2", "loss", "loss+")

_HIGHEST = jax.lax.Precision.HIGHEST


def gram(grads):
    """K = G G^T, [T, T], for per-task gradients grads [T, P]."""
    return jnp.matmul(grads, grads.T, precision=_HIGHEST)


def _split(a):
    """a = hi + lo exactly, hi and lo each with <= 12 significant bits."""
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    return hi, a - hi


def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def accurate_matvec(k, x):
    """K x as (hi, lo), hi + lo good to about twice the precision of float32.

    Float32 K x loses up to cond digits when the terms K_ts x_s cancel
    (conflicting tasks). Here every product is split into four exact float32
    products (12-bit halves) and those are summed with error-free
    transformations (Ogita, Rump and Oishi's Sum2): additions and bit masks
    only, so no compiler contraction into fused multiply-adds can change
    them. Other dtypes: the plain product and lo = 0.
    """
    if k.dtype != jnp.float32:
        return k @ x, jnp.zeros_like(x)
    kh, kl = _split(k)
    xh, xl = _split(x)
    terms = jnp.concatenate([kh * xh, kh * xl, kl * xh, kl * xl], axis=1)  # [T, 4T]
    hi, lo = terms[:, 0], jnp.zeros_like(x)
    for i in range(1, terms.shape[1]):
        hi, err = _two_sum(hi, terms[:, i])
        lo = lo + err
    return hi, lo


def combine_rows(coeffs, grads):
    """sum_t coeffs[t] * grads[t]: [T] x [T, P] -> [P]."""
    return jnp.matmul(coeffs, grads, precision=_HIGHEST)


def project_to_simplex(y):
    """Euclidean projection of y [m] onto the probability simplex.

    LibMTL's sort-based routine: sort y descending into s; for i = 1..m-1 take
    the first i with tau_i = (s_1 + ... + s_i - 1) / i > s_{i+1}; if there is
    none, tau = (sum(y) - 1) / m. The result is max(y - tau, 0).
    """
    m = y.shape[0]
    default = (y.sum() - 1.0) / m
    if m == 1:
        return jnp.maximum(y - default, 0.0)
    s = jnp.sort(y)[::-1]
    taus = (jnp.cumsum(s)[:-1] - 1.0) / jnp.arange(1, m, dtype=y.dtype)
    hit = taus > s[1:]
    tau = jnp.where(hit.any(), taus[jnp.argmax(hit)], default)
    return jnp.maximum(y - tau, 0.0)


def _two_point(v1v1, v1v2, v2v2):
    """(gamma, 1 - gamma, cost); the clipped ends keep LibMTL's 0.999 / 0.001."""
    first = jnp.asarray(v1v2 >= v1v1)
    second = jnp.logical_and(jnp.logical_not(first), v1v2 >= v2v2)
    denom = v1v1 + v2v2 - 2.0 * v1v2  # > 0 whenever the interior case applies.
    denom = jnp.where(first | second, 1.0, denom)
    gamma_mid = -1.0 * ((v1v2 - v2v2) / denom)
    cost_mid = v2v2 + gamma_mid * (v1v2 - v2v2)
    gamma = jnp.where(first, 0.999, jnp.where(second, 0.001, gamma_mid))
    rest = jnp.where(first, 0.001, jnp.where(second, 0.999, 1.0 - gamma_mid))
    cost = jnp.where(first, v1v1, jnp.where(second, v2v2, cost_mid))
    return gamma, rest, cost


def min_norm_two_point(v1v1, v1v2, v2v2):
    """Min-norm point of the segment [v2, v1], clipped as LibMTL does.

    Args:
      v1v1, v1v2, v2v2: the inner products v1.v1, v1.v2, v2.v2.

    Returns:
      (gamma, cost): gamma is the weight on v1 (0.999 if v1.v2 >= v1.v1, else
      0.001 if v1.v2 >= v2.v2, else the exact minimiser) and cost the squared
      norm at the unclipped end or interior point, as LibMTL reports it.
    """
    gamma, _, cost = _two_point(v1v1, v1v2, v2v2)
    return gamma, cost


def _initial_pair(m):
    """lambda from the cheapest pair i < j (first in lexicographic order)."""
    num = m.shape[0]
    rows, cols = np.triu_indices(num, 1)  # Pairs i < j, lexicographic.
    gamma, rest, cost = _two_point(m[rows, rows], m[rows, cols], m[cols, cols])
    best = jnp.argmin(cost)  # First minimum, as LibMTL's strict `<` scan.
    lam = jnp.zeros((num,), m.dtype)
    lam = lam.at[jnp.asarray(rows)[best]].set(gamma[best])
    return lam.at[jnp.asarray(cols)[best]].set(rest[best])


def _next_point(lam, grad_dir):
    """One projected step from lam along grad_dir, LibMTL's step-size rule."""
    proj = grad_dir - grad_dir.sum() / lam.shape[0]
    neg, pos = proj < 0, proj > 0
    safe = jnp.where(neg | pos, proj, 1.0)
    tm1 = jnp.where(neg, -1.0 * lam / safe, -1.0)  # -1: not a candidate.
    tm2 = jnp.where(pos, (1.0 - lam) / safe, -1.0)
    ok1, ok2 = tm1 > STEP_FLOOR, tm2 > STEP_FLOOR
    # t starts at 1 only when no tm1 qualifies; tm2 then can only shrink it.
    t = jnp.where(ok1.any(), jnp.min(jnp.where(ok1, tm1, jnp.inf)), 1.0)
    t = jnp.minimum(t, jnp.min(jnp.where(ok2, tm2, jnp.inf)))
    return project_to_simplex(proj * t + lam)


def min_norm_solve(m):
    """Sener-Koltun's approximate min-norm point on a Gram matrix, jit-safe.

    Exactly LibMTL's routine: start from the cheapest pair (two-point solver,
    clipped to 0.999 / 0.001); for T = 2 that is the answer. Otherwise up to
    `MAX_ITER` times: step along p = -M lam - mean(-M lam) with LibMTL's step
    size, project onto the simplex, line-search the segment with the two-point
    solver; if the new lambda moved less than `STOP_CRIT` in L1, return the
    *old* lambda. The step size follows LibMTL's code: t = min{-lam_k / p_k :
    p_k < 0, > 1e-7} (1 if there is none), then t = min(t, (1 - lam_k) / p_k
    : p_k > 0, > 1e-7). The result is approximate (the clipping alone leaves
    up to 0.001 on the wrong end), and sensitive: over many iterations a
    1e-15 change in M can move lambda by 1e-3.

    Args:
      m: [T, T] Gram matrix of the vectors whose hull is searched.

    Returns:
      lambda [T] on the simplex.
    """
    num = m.shape[0]
    if num == 1:
        return jnp.ones((1,), m.dtype)
    lam = _initial_pair(m)
    if num == 2:
        return lam

    def cond(carry):
        i, _, done = carry
        return jnp.logical_and(i < MAX_ITER, ~done)

    def body(carry):
        i, lam, _ = carry
        new_point = _next_point(lam, -1.0 * (m @ lam))
        gamma, rest, _ = _two_point(
            lam @ m @ lam, lam @ m @ new_point, new_point @ m @ new_point
        )
        new_lam = gamma * lam + rest * new_point
        done = jnp.abs(new_lam - lam).sum() < STOP_CRIT
        return i + 1, jnp.where(done, lam, new_lam), done

    _, lam, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), lam, jnp.zeros((), bool))
    )
    return lam


def gradient_normalizers(sq_norms, losses, normalization: str):
    """n_t for each task; 1 where |n_t| < NORM_FLOOR (zero gradient or loss).

    Args:
      sq_norms: [T] squared gradient norms ||g_t||^2.
      losses: [T] task losses.
      normalization: "none" (1), "l2" (||g_t||), "loss" (L_t) or "loss+"
        (L_t ||g_t||).

    Returns:
      [T] normalisers; g^_t = g_t / n_t.
    """
    norms = jnp.sqrt(jnp.maximum(sq_norms, 0.0))
    if normalization == "none":
        return jnp.ones_like(sq_norms)
    if normalization == "l2":
        n = norms
    elif normalization == "loss":
        n = losses.astype(sq_norms.dtype)
    elif normalization == "loss+":
        n = losses.astype(sq_norms.dtype) * norms
    else:
        raise ValueError(
            f"weighting.mgda_normalization={normalization!r}: "
            f"choose one of {list(NORMALIZATIONS)}"
        )
    return jnp.where(jnp.abs(n) >= NORM_FLOOR, n, 1.0)


def mgda_aggregate(
    params, state, losses, grads, *, normalization: str, step=None, rng=None
):
    """MGDA's update from per-task gradients.

    Args:
      params: unused ({}).
      state: carried through ({}).
      losses: [T] task losses (for the loss normalisations).
      grads: [T, P] per-task gradients (or [T, D] representation gradients).
      normalization: see `gradient_normalizers`.

    Returns:
      GradOutput: update = sum_t lambda_t g_t / n_t, weights = lambda,
      rep_coeffs = lambda (raw, LibMTL's MGDA-UB), head weights 1.
    """
    del params, step, rng
    k = gram(grads)  # [T, T]
    n = gradient_normalizers(jnp.diag(k), losses, normalization)
    lam = min_norm_solve(k / jnp.outer(n, n))
    ones = jnp.ones_like(lam)
    return GradOutput(
        update=combine_rows(lam / n, grads),
        weights=lam,
        head_weights=ones,
        state=state,
        param_grads={},
        rep_coeffs=lam,
    )


def make_mgda(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    if cfg.mgda_normalization not in NORMALIZATIONS:
        raise ValueError(
            f"weighting.mgda_normalization={cfg.mgda_normalization!r}: "
            f"choose one of {list(NORMALIZATIONS)}"
        )
    aggregate = functools.partial(mgda_aggregate, normalization=cfg.mgda_normalization)
    return Method("mgda", no_params, aggregate=aggregate, rep_grad_ok=True)


# name -> builder(weighting config, tasks, steps_per_epoch) -> Method.
BUILDERS = {"mgda": make_mgda}
