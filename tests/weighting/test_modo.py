"""MoDo against a float64 NumPy transcription of MTL_METHODS.md and by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser.weighting import modo


def _build(**overrides):
    cfg = default.get_config().weighting
    cfg.name = "modo"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return modo.make_modo(cfg, (), 1)


def _simplex(y):
    """Euclidean projection on the simplex, by bisection on tau (float64)."""
    lo, hi = y.min() - 1.0, y.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        lo, hi = (tau, hi) if np.maximum(y - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(y - (lo + hi) / 2, 0)


def _reference(grads_seq, gamma, rho):
    """(lambda, update) per step, float64."""
    lam, out = np.full(grads_seq[0].shape[1], 1 / grads_seq[0].shape[1]), []
    for g0, g1, g2 in grads_seq:
        lam = _simplex(lam - gamma * (g0 @ (g1.T @ lam) + rho * lam))
        out.append((lam, g2.T @ lam))
    return out


def _run(method, grads_seq):
    num_tasks = grads_seq[0].shape[1]
    _, state = method.init(num_tasks)
    fn, outs = jax.jit(method.aggregate), []
    for step, grads in enumerate(grads_seq):
        losses = jnp.ones((3, num_tasks), jnp.float32)
        g = jnp.asarray(grads, jnp.float32)
        out = fn({}, state, losses, g, step=jnp.int32(step), rng=None)
        state = out.state
        outs.append(out)
    return outs


@pytest.mark.parametrize("gamma, rho", [(1e-3, 0.1), (0.3, 0.5)])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_matches_reference_over_steps(gamma, rho, num_tasks):
    rng = np.random.default_rng(num_tasks)
    base = rng.normal(size=(num_tasks, 10))
    grads_seq = [
        (base + 0.5 * rng.normal(size=(3, num_tasks, 10))).astype(np.float32)
        for _ in range(4)
    ]
    outs = _run(_build(modo_gamma=gamma, modo_rho=rho), grads_seq)
    ref = _reference([g.astype(np.float64) for g in grads_seq], gamma, rho)
    for out, (lam, update) in zip(outs, ref, strict=True):
        np.testing.assert_allclose(out.weights, lam, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.head_weights, np.full(num_tasks, 1 / 3))
        np.testing.assert_allclose(float(out.weights.sum()), 1.0, rtol=1e-6)


def test_by_hand():
    # G0 = G1 = I (two tasks, two params): lambda - gamma (lambda + rho lambda)
    # = 0.5 (1 - gamma (1 + rho)) each, projected back to (1/2, 1/2); the
    # update is G2^T lambda.
    g2 = np.array([[1.0, 2.0], [3.0, -1.0]])
    outs = _run(
        _build(modo_gamma=0.5, modo_rho=0.1), [np.stack([np.eye(2), np.eye(2), g2])]
    )
    np.testing.assert_allclose(outs[0].weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(outs[0].update, [2.0, 0.5], rtol=1e-6)
    # A large gamma on G0 = G1 = diag(1, 3) moves lambda to the first task.
    outs = _run(
        _build(modo_gamma=10.0, modo_rho=0.0),
        [np.stack([np.diag([1.0, 3.0])] * 2 + [g2])],
    )
    np.testing.assert_allclose(outs[0].weights, [1.0, 0.0], atol=1e-6)


def test_bad_fields_are_named():
    with pytest.raises(ValueError, match="weighting.modo_gamma"):
        _build(modo_gamma=-1.0)
