"""SDMGrad against a float64 NumPy transcription of MTL_METHODS.md (one fresh
step: the inner SGD is chaotic, so later steps agree only in distribution)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser.weighting import sdmgrad


def _build(**overrides):
    cfg = default.get_config().weighting
    cfg.name = "sdmgrad"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return sdmgrad.make_sdmgrad(cfg, (), 1)


def _simplex(v):
    """LibMTL's sort/cumsum projection, float64, unchanged when on the simplex."""
    if v.sum() == 1 and np.all(v >= 0):
        return v
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u) - 1
    ind = np.arange(1, len(v) + 1)
    rho = ind[u - cssv / ind > 0][-1]
    return np.maximum(v - cssv[rho - 1] / rho, 0)


def _reference(grads, w, lamda, niter):
    g0, g1, g2 = np.asarray(grads, np.float64)
    gg = g1 @ g2.T
    scale = np.mean(np.sqrt(np.maximum(np.diag(gg), 0)))
    gg = gg / (scale**2 + 1e-8)
    q = gg.mean(1)
    buf = None
    for _ in range(niter):
        grad = gg @ w + lamda * q
        buf = grad if buf is None else 0.5 * buf + grad
        w = _simplex(w - 5 * buf)
    update = (g0.T @ w + lamda * g0.mean(0)) / (1 + lamda)
    return w, update


def _call(method, state, grads):
    num_tasks = grads.shape[1]
    return jax.jit(method.aggregate)(
        {},
        state,
        jnp.ones((3, num_tasks), jnp.float32),
        jnp.asarray(grads, jnp.float32),
        step=jnp.int32(0),
        rng=None,
    )


@pytest.mark.parametrize("niter", [1, 3])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_matches_reference_on_a_fresh_step(niter, num_tasks):
    rng = np.random.default_rng(num_tasks)
    grads = rng.normal(size=(3, num_tasks, 12)).astype(np.float32)
    method = _build(sdmgrad_niter=niter)
    _, state = method.init(num_tasks)
    out = _call(method, state, grads)
    w, update = _reference(grads, np.full(num_tasks, 1 / num_tasks), 0.3, niter)
    np.testing.assert_allclose(out.weights, w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.head_weights, np.ones(num_tasks))


def test_default_iterations_stay_on_the_simplex_and_finite():
    rng = np.random.default_rng(0)
    method = _build()
    _, state = method.init(3)
    for grads in [rng.normal(size=(3, 3, 12)), np.zeros((3, 3, 12))]:
        out = _call(method, state, grads.astype(np.float32))
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
        assert np.all(out.weights >= 0)
        np.testing.assert_allclose(float(out.weights.sum()), 1.0, rtol=1e-5)
        state = out.state


def test_by_hand_orthogonal_equal_gradients():
    # G1 = G2 = I: GG = I / (1 + 1e-8), q = 1/T; from w = 1/T every gradient
    # coordinate is equal, so w stays 1/T and the update is the mean of G0.
    g0 = np.array([[2.0, 0.0], [0.0, 4.0]])
    grads = np.stack([g0, np.eye(2), np.eye(2)])
    method = _build()
    _, state = method.init(2)
    out = _call(method, state, grads)
    np.testing.assert_allclose(out.weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize(
    "field, value", [("sdmgrad_lamda", -0.1), ("sdmgrad_niter", 0)]
)
def test_bad_fields_are_named(field, value):
    with pytest.raises(ValueError, match=f"weighting.{field}"):
        _build(**{field: value})
