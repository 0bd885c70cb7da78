"""IMTL against hand-computed cases, its defining properties and an
independent float64 NumPy reference of MTL_METHODS.md (written here from the
spec, loops and all)."""

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.weighting import imtl
from tests.weighting import gradient_cases as cases


def imtl_ref(scale, grads):
    """LibMTL's IMTL-G literally: inverse of D U^T, alpha_1 = 1 - sum."""
    g = np.exp(scale)[:, None] * grads
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0:1] - g[1:]
    uu = u[0:1] - u[1:]
    rest = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    alpha = np.concatenate([[1 - rest.sum()], rest])
    return alpha, alpha @ g


def _imtl(scale, grads, losses=None):
    method = cases.build(imtl.make_imtl)
    num_tasks = len(grads)
    params = {"loss_scale": jnp.asarray(scale, jnp.float32)}
    losses = np.ones(num_tasks) if losses is None else losses
    return cases.call(method, params, {}, losses, grads)


def test_imtl_orthogonal_by_hand():
    # d = a1 (2, 0) + a2 (0, 1), equal projections 2 a1 = a2, a1 + a2 = 1.
    out = _imtl([0.0, 0.0], np.array([[2.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(out.weights, [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(out.update, [2 / 3, 2 / 3], rtol=1e-6)


def test_imtl_conflicting_by_hand():
    # g1 = (1, 0), g2 = (-1, 1)/sqrt(2) * 2: d . u1 = d . u2 with a1 + a2 = 1.
    g2 = np.array([-1.0, 1.0]) * np.sqrt(2.0)
    out = _imtl([0.0, 0.0], np.array([[1.0, 0.0], g2]))
    u1, u2 = np.array([1.0, 0.0]), g2 / 2.0
    # d = a1 g1 + (1 - a1) g2; solve (d . (u1 - u2)) = 0 for a1 by hand.
    a1 = -(g2 @ (u1 - u2)) / ((np.array([1.0, 0.0]) - g2) @ (u1 - u2))
    np.testing.assert_allclose(out.weights, [a1, 1 - a1], rtol=1e-5)


@pytest.mark.parametrize("conflict", [False, True])
def test_imtl_matches_reference(conflict):
    for num_tasks, grads, losses in cases.draws(4, conflict):
        scale = np.random.default_rng(num_tasks).normal(0, 0.5, num_tasks)
        scale = scale.astype(np.float32).astype(float)
        out = _imtl(scale, grads, losses)
        alpha, update = imtl_ref(scale, grads)
        np.testing.assert_allclose(out.weights, alpha, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out.update, update, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out.head_weights, np.exp(scale), rtol=1e-6)
        np.testing.assert_allclose(
            out.param_grads["loss_scale"], np.exp(scale) * losses - 1, rtol=1e-5
        )
        np.testing.assert_allclose(
            out.rep_coeffs, alpha * np.exp(scale), rtol=1e-3, atol=1e-4
        )


def test_imtl_update_projects_equally_on_every_unit_gradient():
    for _, grads, _ in cases.draws(5, conflict=True):
        out = _imtl(np.zeros(len(grads)), grads)
        units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
        proj = units @ np.asarray(out.update, float)
        np.testing.assert_allclose(proj, proj[0], rtol=1e-3)
        assert abs(float(np.sum(out.weights)) - 1) < 1e-5


@pytest.mark.parametrize("zero", [0, 2])
def test_imtl_zero_gradient_is_dropped_not_nan(zero):
    rng = np.random.default_rng(zero)
    grads = rng.normal(size=(3, 5))
    grads[zero] = 0.0
    out = _imtl([0.1, -0.2, 0.3], grads)
    assert np.all(np.isfinite(out.update)) and np.all(np.isfinite(out.weights))
    assert float(out.weights[zero]) == 0.0
    # The others are balanced as two-task IMTL.
    others = [t for t in range(3) if t != zero]
    alpha, update = imtl_ref(np.array([0.1, -0.2, 0.3])[others], grads[others])
    np.testing.assert_allclose(np.asarray(out.weights)[others], alpha, rtol=1e-4)
    np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-6)


def test_imtl_degenerate_gradients_stay_finite():
    g = np.array([1.0, 2.0, -3.0])
    out = _imtl([0.0, 0.0], np.stack([g, g]))  # D U^T = 0: LibMTL raises.
    np.testing.assert_allclose(out.weights, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out.update, g, rtol=1e-6)
    out = _imtl([0.0, 0.0], np.zeros((2, 3)))
    np.testing.assert_array_equal(out.update, [0, 0, 0])
    assert np.all(np.isfinite(out.weights))
