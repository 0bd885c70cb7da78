"""FairGrad against hand-computed cases, its defining property, Nash-MTL (alpha
= 1) and float64 references of MTL_METHODS.md written here from the spec
(scipy's least_squares as LibMTL calls it, and a plain float64 Newton)."""

import collections
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.optimize

from mtl_ser.weighting import fairgrad, mgda, nash_mtl

KEY = jax.random.PRNGKey(0)
ALPHAS = (0.5, 1.0, 2.0)


def _cfg(**kw):
    base = dict(
        name="fairgrad",
        rep_grad=False,
        fairgrad_alpha=1.0,
        nash_update_every=1,
        nash_iterations=20,
        nash_max_norm=0.0,
    )
    return ml_collections.ConfigDict({**base, **kw})


_JITTED = {}
_TRACES = collections.Counter()
# Every case is zero-padded to this many tasks and parameters: one compile per
# alpha. Zero-gradient tasks decouple from the others (module docstring; checked
# by test_zero_gradient_tasks_leave_the_others_as_they_were), so padding leaves
# the real tasks' weights and the update as they are.
_TASKS, _WIDTH = 5, 16


def _method(alpha=1.0):
    """One method (and one jitted aggregate) per alpha."""
    if alpha not in _JITTED:
        method = fairgrad.make_fairgrad(_cfg(fairgrad_alpha=alpha), (), 1)

        def aggregate(*args, **kwargs):
            _TRACES[alpha] += 1
            return method.aggregate(*args, **kwargs)

        _JITTED[alpha] = method, jax.jit(aggregate)
    return _JITTED[alpha]


def _pad(grads):
    grads = np.asarray(grads, np.float32)
    padded = np.zeros((_TASKS, _WIDTH), np.float32)
    padded[: grads.shape[0], : grads.shape[1]] = grads
    return padded


def _fair(grads, alpha=1.0, step=0):
    """The jitted aggregate on padded gradients, cut back to [T] and [P]."""
    method, fn = _method(alpha)
    num, size = np.shape(grads)
    params, state = method.init(_TASKS)
    out = fn(
        params,
        state,
        jnp.ones(_TASKS, jnp.float32),
        jnp.asarray(_pad(grads)),
        step=jnp.asarray(step, jnp.int32),
        rng=KEY,
    )
    np.testing.assert_array_equal(out.update[size:], 0)
    return out._replace(
        update=out.update[:size],
        weights=out.weights[:num],
        head_weights=out.head_weights[:num],
        rep_coeffs=out.rep_coeffs[:num],
    )


@functools.cache
def _jitted_solve(alpha, iterations):
    return jax.jit(
        functools.partial(fairgrad.fairgrad_solve, alpha=alpha, iterations=iterations)
    )


def _solve(gram, alpha=1.0, iterations=fairgrad.NEWTON_ITERS):
    """fairgrad_solve on K zero-padded to [5, 5]: (x [T], ok)."""
    num = len(gram)
    padded = np.zeros((_TASKS, _TASKS), np.float32)
    padded[:num, :num] = gram
    x, ok = _jitted_solve(alpha, iterations)(jnp.asarray(padded))
    return np.asarray(x)[:num], bool(ok)


def _draws(seed, conflict=False, shapes=((2, 6), (3, 9), (5, 12))):
    """Gradients [T, P], exactly float32, norms spread by lognormal(0.7)."""
    rng = np.random.default_rng(seed)
    for num_tasks, num_params in shapes:
        g = rng.normal(size=(num_tasks, num_params))
        g *= np.exp(rng.normal(0, 0.7, (num_tasks, 1)))
        if conflict:  # Pull alternate tasks against a common direction.
            base = rng.normal(size=num_params)
            g += 0.8 * base * np.where(np.arange(num_tasks) % 2, -1, 1)[:, None]
        yield g.astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------- references


def lsq_ref(gram, alpha):
    """LibMTL's solve: least_squares on K x - x^(-1/alpha), x0 = 1/T, x > 0."""
    num = len(gram)
    sol = scipy.optimize.least_squares(
        lambda x: gram @ x - x ** (-1.0 / alpha),
        np.full(num, 1.0 / num),
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=10_000,
    )
    x = sol.x
    assert np.abs(gram @ x * x ** (1 / alpha) - 1).max() < 1e-9  # Tight itself.
    return x


def newton_ref(gram, alpha):
    """Newton on the stationarity system K x = x^(-1/alpha), float64, with
    backtracking on the residual norm (an independent route to the same x)."""
    x = np.diag(gram) ** (-alpha / (alpha + 1))

    def residual(x):
        return gram @ x - x ** (-1.0 / alpha)

    for _ in range(200):
        r = residual(x)
        jac = gram + np.diag(x ** (-1.0 / alpha - 1) / alpha)
        dx = np.linalg.solve(jac, -r)
        t = 1.0
        while t > 1e-12 and (
            np.any(x + t * dx <= 0)
            or np.linalg.norm(residual(x + t * dx)) > (1 - 1e-4 * t) * np.linalg.norm(r)
        ):
            t /= 2
        x = x + t * dx
    assert np.abs(gram @ x * x ** (1 / alpha) - 1).max() < 1e-9
    return x


def _gram32(g):
    """K as the method computes it (float32 products), in float64."""
    k = jnp.matmul(
        jnp.asarray(g, jnp.float32), jnp.asarray(g, jnp.float32).T, precision="highest"
    )
    return np.asarray(k, np.float64)


# ---------------------------------------------------------------- by hand


@pytest.mark.parametrize("alpha", ALPHAS)
def test_orthogonal_gradients_by_hand(alpha):
    # K = diag(||g_t||^2): ||g_t||^2 x_t = x_t^(-1/alpha), x_t = ||g_t||^(-2a/(a+1)).
    grads = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.25]])
    out = _fair(grads, alpha)
    x = np.array([2.0, 1.0, 0.25]) ** (-2 * alpha / (alpha + 1))
    np.testing.assert_allclose(out.weights, x, rtol=1e-6)
    np.testing.assert_allclose(out.update, x @ grads, rtol=1e-6)
    np.testing.assert_array_equal(out.head_weights, out.weights)
    np.testing.assert_array_equal(out.rep_coeffs, [1, 1, 1])
    assert out.state == {} and out.param_grads == {}


@pytest.mark.parametrize("alpha", ALPHAS)
def test_identical_gradients_by_hand(alpha):
    # x_1 = x_2 by symmetry: 2 ||g||^2 x = x^(-1/alpha).
    g = np.array([1.0, 2.0, -2.0])
    out = _fair(np.stack([g, g]), alpha)
    want = (2 * 9.0) ** (-alpha / (alpha + 1))
    np.testing.assert_allclose(out.weights, [want, want], rtol=1e-6)


def test_conflicting_pair_by_hand():
    # alpha = 1, g1 = (1, 0), g2 = (-1, 1): K = [[1, -1], [-1, 2]];
    # x1 (x1 - x2) = 1 and x2 (2 x2 - x1) = 1. The first gives
    # x2 = x1 - 1/x1; then x1^2 + 2/x1^2 = 4, x1^2 = 2 + sqrt 2 (x2 > 0).
    grads = np.array([[1.0, 0.0], [-1.0, 1.0]])
    out = _fair(grads)
    x1 = np.sqrt(2 + np.sqrt(2))
    np.testing.assert_allclose(out.weights, [x1, x1 - 1 / x1], rtol=1e-6)
    d = np.asarray(out.update, float)
    np.testing.assert_allclose(grads @ d, 1 / np.asarray(out.weights), rtol=1e-6)


# ---------------------------------------------------------------- references


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("conflict", [False, True])
def test_matches_libmtl_least_squares(alpha, conflict):
    for g in _draws(int(10 * alpha) + conflict, conflict):
        out = _fair(g, alpha)
        x = lsq_ref(_gram32(g), alpha)
        np.testing.assert_allclose(out.weights, x, rtol=1e-5)
        np.testing.assert_allclose(out.update, x @ g, rtol=1e-5, atol=1e-6)


def test_ill_conditioned_conflicts_match_float64():
    # Norms over three decades, alternate tasks pulled hard against a shared
    # direction: cond(K) from 10 to 1e5 here. The module docstring has the
    # full measurement; this is a slice of it.
    rng = np.random.default_rng(3)
    for num_tasks in (2, 3, 5, 5, 5):
        g = rng.normal(size=(num_tasks, 16))
        g *= 10 ** rng.uniform(-1.5, 1.5, (num_tasks, 1)) / np.linalg.norm(
            g, axis=1, keepdims=True
        )
        base = rng.normal(size=16) / 4 * np.median(np.linalg.norm(g, axis=1)) * 3
        g[0::2] += base
        g[1::2] -= 0.9 * base
        g = g.astype(np.float32).astype(np.float64)
        for alpha in (1.0, 2.0):
            x = newton_ref(_gram32(g), alpha)
            out = _fair(g, alpha)
            np.testing.assert_allclose(out.weights, x, rtol=1e-4)


@pytest.mark.parametrize("conflict", [False, True])
def test_alpha_one_is_nash_mtl_without_clipping(conflict):
    nash = nash_mtl.make_nash_mtl(_cfg(), (), 1)  # nash_max_norm = 0.
    _, state = nash.init(_TASKS)
    nash_fn = jax.jit(functools.partial(nash.aggregate, {}, state, None, step=0))
    for g in _draws(20 + conflict, conflict):
        want = nash_fn(jnp.asarray(_pad(g)))
        out = _fair(g, 1.0)
        num, size = g.shape
        np.testing.assert_allclose(out.weights, want.weights[:num], rtol=2e-6)
        np.testing.assert_allclose(out.update, want.update[:size], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_update_has_the_fair_projections(alpha):
    # The defining property: d . g_t = x_t^(-1/alpha) for every task.
    for g in _draws(30, conflict=True):
        out = _fair(g, alpha)
        x, d = np.asarray(out.weights, float), np.asarray(out.update, float)
        np.testing.assert_allclose(g @ d, x ** (-1 / alpha), rtol=1e-4)
        assert (x > 0).all()


def test_solution_scales_as_the_theory_says():
    # K -> c K gives x -> c^(-alpha/(alpha+1)) x (here c = 16, alpha = 2).
    g = next(_draws(40, conflict=True))
    x1 = np.asarray(_fair(g, 2.0).weights, float)
    x2 = np.asarray(_fair(4 * g, 2.0).weights, float)
    np.testing.assert_allclose(x2, x1 * 16 ** (-2 / 3), rtol=1e-5)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("zero", [0, 1])
def test_zero_gradient_task_is_finite(zero):
    grads = np.array([[3.0, 0.0, 1.0], [0.0, 0.5, 0.2], [1.0, 1.0, -1.0]])
    grads[zero] = 0.0
    out = _fair(grads)
    x = np.asarray(out.weights, float)
    others = [t for t in range(3) if t != zero]
    want = lsq_ref(grads[others] @ grads[others].T, 1.0)
    np.testing.assert_allclose(x[others], want, rtol=1e-5)
    assert x[zero] == x[others].max()  # Finite stand-in for "unbounded".
    np.testing.assert_allclose(out.update, want @ grads[others], rtol=1e-5)


def test_zero_gradient_tasks_leave_the_others_as_they_were():
    # What the zero-padding in these tests relies on.
    g = next(_draws(50, conflict=True, shapes=((3, 8),)))
    alone, ok = _jitted_solve(1.0, fairgrad.NEWTON_ITERS)(
        jnp.asarray(_gram32(g), jnp.float32)
    )
    assert ok
    padded, ok = _solve(_gram32(g), 1.0)
    assert ok
    np.testing.assert_allclose(padded, alone, rtol=1e-6)


def test_all_zero_gradients():
    out = _fair(np.zeros((3, 4)))
    np.testing.assert_array_equal(out.weights, [1, 1, 1])
    np.testing.assert_array_equal(out.update, [0, 0, 0, 0])


@pytest.mark.parametrize("alpha", ALPHAS)
def test_opposite_gradients_fall_back_to_each_task_alone(alpha):
    # g2 = -g1: (K x)_1 = -(K x)_2, so no x > 0 solves it. Each task gets
    # ||g||^(-2a/(a+1)), as if alone (||g||^2 = 9), and d = 0.
    g = np.array([1.0, -2.0, 2.0])
    out = _fair(np.stack([g, -g]), alpha)
    np.testing.assert_allclose(out.weights, [9.0 ** (-alpha / (alpha + 1))] * 2, 1e-6)
    np.testing.assert_allclose(out.update, [0, 0, 0], atol=1e-6)
    if alpha == 1.0:
        x, ok = _solve(np.outer([3.0, -3.0], [3.0, -3.0]))
        assert not ok
        np.testing.assert_allclose(x, [1 / 3, 1 / 3], rtol=1e-6)


def test_falls_back_when_the_budget_is_too_small():
    gram = np.array([[1.0, 0.9, -0.2], [0.9, 4.0, 0.5], [-0.2, 0.5, 0.3]])
    x, ok = _solve(gram, 1.0, iterations=0)
    assert not ok
    np.testing.assert_allclose(x, np.diag(gram) ** -0.5, rtol=1e-6)  # Alone.
    x, ok = _solve(gram, 1.0)
    assert ok
    np.testing.assert_allclose(x, lsq_ref(gram, 1.0), rtol=1e-5)


def test_accurate_matvec_is_exact_on_cancelling_sums():
    # Terms of size 1e3 cancelling to ~1e-4: float32 K x loses every digit;
    # the compensated product is within a few float64 ulps of the exact sum.
    rng = np.random.default_rng(0)
    k = rng.normal(size=(6, 6)).astype(np.float32) * 1e3
    x = rng.normal(size=6).astype(np.float32)
    x[0] = np.float32(-(k[0, 1:].astype(float) @ x[1:].astype(float)) / k[0, 0])
    exact = k.astype(float) @ x.astype(float)
    hi, lo = jax.jit(mgda.accurate_matvec)(jnp.asarray(k), jnp.asarray(x))
    got = np.asarray(hi, float) + np.asarray(lo, float)
    bound = 1e-12 * np.abs(k.astype(float)) @ np.abs(x.astype(float))
    assert (np.abs(got - exact) <= bound).all()
    plain = np.asarray(jnp.asarray(k) @ jnp.asarray(x), float)
    assert abs(exact[0]) < 1e-2 and abs(plain[0] - exact[0]) > 100 * abs(
        got[0] - exact[0]
    )


# ---------------------------------------------------------------- method


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_bad_alpha(bad):
    with pytest.raises(ValueError, match="weighting.fairgrad_alpha"):
        fairgrad.make_fairgrad(_cfg(fairgrad_alpha=bad), (), 1)


def test_builder_and_flags():
    assert set(fairgrad.BUILDERS) == {"fairgrad"}
    method = fairgrad.BUILDERS["fairgrad"](_cfg(fairgrad_alpha=2), (), 1)
    assert method.name == "fairgrad" and method.needs_grads
    assert not method.rep_grad_ok and method.init(3) == ({}, {})
    assert method.aggregate.keywords == {"alpha": 2.0}


def test_runs_under_jit_without_retracing():
    method, _ = _method(1.0)
    _, state = method.init(3)
    _fair(np.ones((3, 9)))  # Compiled (if not already).
    before = _TRACES[1.0]
    rng = np.random.default_rng(0)
    for step in range(3):
        out = _fair(rng.normal(size=(3, 9)), 1.0, step)
        assert jax.tree.structure(out.state) == jax.tree.structure(state)
        assert out.update.shape == (9,) and out.update.dtype == jnp.float32
        for v in (out.weights, out.head_weights, out.rep_coeffs):
            assert v.shape == (3,) and v.dtype == jnp.float32
        assert np.isfinite(out.update).all() and np.isfinite(out.weights).all()
    assert _TRACES[1.0] == before
