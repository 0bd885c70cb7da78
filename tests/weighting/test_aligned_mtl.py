"""Aligned-MTL against hand-computed cases, its defining properties and an
independent float64 NumPy reference of MTL_METHODS.md (written here from the
spec, loops and all)."""

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.weighting import aligned_mtl
from tests.weighting import gradient_cases as cases


def aligned_ref(grads):
    """LibMTL's Aligned-MTL: sort eigenpairs descending, slice to the rank."""
    m = grads @ grads.T
    lam, vecs = np.linalg.eigh(m)
    tol = lam.max() * m.shape[0] * np.finfo(np.float32).eps
    rank = int(np.sum(lam > tol))
    order = np.argsort(-lam)
    lam, vecs = lam[order][:rank], vecs[:, order][:, :rank]
    b = np.sqrt(lam[-1]) * (vecs @ np.diag(1 / np.sqrt(lam)) @ vecs.T)
    alpha = b.sum(0)
    return alpha, alpha @ grads, b


def _aligned(grads):
    method = cases.build(aligned_mtl.make_aligned_mtl)
    return cases.call(method, {}, {}, np.ones(len(grads)), grads)


def test_aligned_orthogonal_by_hand():
    # M = diag(4, 1): B = sqrt(1) diag(1/2, 1), alpha = (1/2, 1), d = (1, 1).
    out = _aligned(np.array([[2.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(out.weights, [0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("conflict", [False, True])
def test_aligned_matches_reference(conflict):
    for _, grads, _ in cases.draws(6, conflict):
        out = _aligned(grads)
        alpha, update, _ = aligned_ref(grads)
        np.testing.assert_allclose(out.weights, alpha, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out.update, update, rtol=1e-3, atol=1e-4)
        np.testing.assert_array_equal(out.rep_coeffs, out.weights)


def test_aligned_rank_deficient_matches_reference():
    rng = np.random.default_rng(7)
    grads = rng.normal(size=(2, 3)) @ rng.normal(size=(3, 8))
    grads = np.concatenate([grads, grads[:1] - 2 * grads[1:]])  # T = 3, rank 2.
    grads = grads.astype(np.float32).astype(float)
    out = _aligned(grads)
    alpha, update, _ = aligned_ref(grads)
    np.testing.assert_allclose(out.update, update, rtol=1e-3, atol=1e-3)


def test_aligned_task_gradients_are_orthogonal_with_equal_norms():
    for _, grads, _ in cases.draws(8, conflict=True):
        bmat = aligned_mtl.aligned_matrix(jnp.asarray(grads @ grads.T, jnp.float32))
        aligned = np.asarray(bmat, float) @ grads
        gram = aligned @ aligned.T
        lam_min = np.linalg.eigvalsh(grads @ grads.T).min()
        np.testing.assert_allclose(gram, lam_min * np.eye(len(grads)), atol=1e-3)
        assert np.linalg.cond(aligned) < 1.001


def test_aligned_degenerate_gradients_stay_finite():
    g = np.array([1.0, 2.0, -3.0])
    out = _aligned(np.stack([g, g]))  # Rank 1: the zero eigenvalue is dropped.
    np.testing.assert_allclose(out.weights, [1.0, 1.0], rtol=1e-5)
    out = _aligned(np.stack([g, np.zeros(3)]))
    np.testing.assert_allclose(out.weights, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out.update, g, rtol=1e-6)
    out = _aligned(np.zeros((2, 3)))  # LibMTL raises here.
    np.testing.assert_array_equal(out.weights, [0, 0])
    np.testing.assert_array_equal(out.update, [0, 0, 0])
