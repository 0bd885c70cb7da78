"""Nash-MTL against hand-computed cases, its defining properties and an
independent float64 NumPy reference of MTL_METHODS.md (written here from the
spec, loops and all)."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from mtl_ser.weighting import nash_mtl
from tests.weighting import gradient_cases as cases


def nash_ref(gram):
    """FairGrad's solve (alpha = 1): least squares on K a - 1/a, a > 0."""
    num_tasks = gram.shape[0]
    sol = scipy.optimize.least_squares(
        lambda a: gram @ a - 1 / a,
        np.ones(num_tasks) / num_tasks,
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    return sol.x


def _nash(grads, state=None, step=0, **kw):
    method = cases.build(nash_mtl.make_nash_mtl, **kw)
    if state is None:
        _, state = method.init(len(grads))
    return cases.call(method, {}, state, np.ones(len(grads)), grads, step)


def test_nash_orthogonal_by_hand():
    # alpha_t ||g_t||^2 alpha_t = 1: alpha = (1/2, 1), d = (1, 1).
    grads = np.array([[2.0, 0.0], [0.0, 1.0]])
    out = _nash(grads, nash_max_norm=0.0)
    np.testing.assert_allclose(out.weights, [0.5, 1.0], rtol=1e-5)
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-5)
    np.testing.assert_array_equal(out.head_weights, out.weights)
    np.testing.assert_array_equal(out.state["alpha"], out.weights)
    clipped = _nash(grads)  # max_norm 1: d * 1 / (sqrt 2 + 1e-6).
    np.testing.assert_allclose(clipped.update, [1, 1] / (np.sqrt(2) + 1e-6), 1e-5)
    np.testing.assert_allclose(clipped.weights, [0.5, 1.0], rtol=1e-5)


@pytest.mark.parametrize("conflict", [False, True])
def test_nash_matches_reference_with_tiny_residual(conflict):
    for _, grads, _ in cases.draws(9, conflict):
        gram = grads @ grads.T
        out = _nash(grads, nash_max_norm=0.0)
        alpha = np.asarray(out.weights, float)
        # Measured: <= 1e-5 on 600 draws (see nash_mtl's docstring).
        assert np.abs(alpha * (gram @ alpha) - 1).max() < 1e-4
        np.testing.assert_allclose(alpha, nash_ref(gram), rtol=1e-4)
        np.testing.assert_allclose(out.update, alpha @ grads, rtol=1e-4, atol=1e-5)


def test_nash_falls_back_when_the_budget_is_too_small():
    # (For T = 2 the rescaled 1/||g_t|| start is already exact.)
    gram = jnp.array([[1.0, 0.9, -0.2], [0.9, 4.0, 0.5], [-0.2, 0.5, 0.3]])
    prev = jnp.array([0.3, 0.6, 2.0])
    alpha, ok = nash_mtl.nash_solve(gram, prev, iterations=0)
    assert not ok
    np.testing.assert_array_equal(alpha, prev)
    alpha, ok = nash_mtl.nash_solve(gram, prev, iterations=20)
    assert ok
    np.testing.assert_allclose(alpha, nash_ref(np.asarray(gram, float)), rtol=1e-5)


def test_nash_solution_does_not_depend_on_the_warm_start():
    _, grads, _ = list(cases.draws(10))[2]
    cold = _nash(grads)
    warm = _nash(grads, state={"alpha": jnp.array([5.0, 0.01, 2.0, 1.0, 30.0])})
    np.testing.assert_allclose(warm.weights, cold.weights, rtol=1e-4)


def test_nash_update_every_reuses_previous_alpha():
    grads = np.array([[2.0, 0.0], [0.0, 1.0]])
    prev = {"alpha": jnp.array([3.0, 7.0])}
    kept = _nash(grads, prev, step=3, nash_update_every=2, nash_max_norm=0.0)
    np.testing.assert_array_equal(kept.weights, [3.0, 7.0])
    np.testing.assert_array_equal(kept.state["alpha"], [3.0, 7.0])
    np.testing.assert_allclose(kept.update, [6.0, 7.0])
    solved = _nash(grads, prev, step=4, nash_update_every=2, nash_max_norm=0.0)
    np.testing.assert_allclose(solved.weights, [0.5, 1.0], rtol=1e-5)


def test_nash_clips_the_update_only():
    grads = np.array([[30.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    out = _nash(grads, nash_max_norm=0.5)
    raw = np.asarray(out.weights, float) @ grads
    np.testing.assert_allclose(
        out.update, raw * 0.5 / (np.linalg.norm(raw) + 1e-6), rtol=1e-5
    )
    np.testing.assert_allclose(out.weights, [1 / 30, 10.0], rtol=1e-5)
    small = np.array([[0.1, 0.0], [0.0, 0.2]])
    out = _nash(small, nash_max_norm=1e3)  # Far below the cap: untouched.
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-5)


def test_nash_identical_gradients():
    # alpha_i ||g||^2 (alpha_1 + alpha_2) = 1: alpha = 1 / (||g|| sqrt 2).
    g = np.array([1.0, 2.0, -2.0])
    out = _nash(np.stack([g, g]), nash_max_norm=0.0)
    np.testing.assert_allclose(out.weights, [1 / (3 * np.sqrt(2))] * 2, rtol=1e-5)


def test_nash_opposite_gradients_fall_back_to_previous_alpha():
    # No alpha > 0 solves it (K is singular and conflicting): keep alpha_prev.
    g = np.array([1.0, -2.0, 0.5])
    prev = jnp.array([0.3, 0.6])
    out = _nash(np.stack([g, -g]), {"alpha": prev})
    np.testing.assert_array_equal(out.weights, prev)
    out = _nash(np.stack([g, -g]), nash_max_norm=0.0)
    np.testing.assert_array_equal(out.weights, [1.0, 1.0])
    np.testing.assert_allclose(out.update, [0, 0, 0], atol=1e-6)


def test_nash_zero_gradient_stays_finite():
    grads = np.array([[3.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    out = _nash(grads, {"alpha": jnp.array([1.0, 0.7, 1.0])}, nash_max_norm=0.0)
    # Tasks 0 and 2 are orthogonal: 1/||g||; task 1 keeps its previous weight.
    np.testing.assert_allclose(out.weights, [1 / 3, 0.7, 2.0], rtol=1e-5)
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-5)
    out = _nash(np.zeros((2, 3)))
    np.testing.assert_array_equal(out.weights, [1, 1])
    np.testing.assert_array_equal(out.update, [0, 0, 0])
