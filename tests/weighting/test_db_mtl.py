"""DB-MTL against hand-computed cases, its defining properties and an
independent float64 NumPy reference of MTL_METHODS.md (written here from the
spec, loops and all)."""

import jax
import numpy as np
import pytest

from mtl_ser.weighting import db_mtl
from tests.weighting import gradient_cases as cases


def db_ref(losses_seq, grads_seq, beta, sigma):
    """DB-MTL over several calls, loop by loop."""
    num_tasks, num_params = grads_seq[0].shape
    buf = np.zeros((num_tasks, num_params))
    for k, (losses, grads) in enumerate(
        zip(losses_seq, grads_seq, strict=True), start=1
    ):
        h = np.array([grads[t] / (losses[t] + 1e-8) for t in range(num_tasks)])
        buf = h + (beta / k**sigma) * (buf - h)
    norms = np.array([np.linalg.norm(b) for b in buf])
    scales = norms.max() / (norms + 1e-8)
    update = sum(scales[t] * buf[t] for t in range(num_tasks))
    return scales, update, buf


def _db(beta=0.9, sigma=0.0):
    return cases.build(db_mtl.make_db_mtl, db_beta=beta, db_beta_sigma=sigma)


def test_db_first_call_and_equal_scaled_norms():
    method = _db()
    _, state = method.init(2, num_params=3)
    grads = np.array([[1.0, 0.0, 2.0], [0.0, -4.0, 0.0]])
    losses = np.array([0.5, 2.0])
    out = cases.call(method, {}, state, losses, grads)
    h = grads / (losses[:, None] + 1e-8)
    np.testing.assert_allclose(out.state["buffer"], 0.1 * h, rtol=1e-5)
    assert int(out.state["count"]) == 1
    # ||B|| = 0.1 (sqrt 20, 2): task 2 is scaled up to task 1's norm.
    np.testing.assert_allclose(out.weights, [1.0, np.sqrt(20) / 2], rtol=1e-5)
    scaled = np.asarray(out.weights)[:, None] * np.asarray(out.state["buffer"])
    norms = np.linalg.norm(scaled, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)
    np.testing.assert_allclose(out.head_weights, 1 / (losses + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_db_matches_reference_over_steps(sigma):
    method = _db(beta=0.9, sigma=sigma)
    for num_tasks, grads, losses in cases.draws(11, conflict=True):
        rng = np.random.default_rng(num_tasks)
        grads_seq = [grads + rng.normal(0, 0.5, grads.shape) for _ in range(4)]
        grads_seq = [g.astype(np.float32).astype(float) for g in grads_seq]
        losses_seq = [losses * rng.uniform(0.5, 1.5, num_tasks) for _ in range(4)]
        losses_seq = [x.astype(np.float32).astype(float) for x in losses_seq]
        _, state = method.init(num_tasks, num_params=grads.shape[1])
        for step, (ls, gs) in enumerate(zip(losses_seq, grads_seq, strict=True)):
            out = cases.call(method, {}, state, ls, gs, step)
            state = out.state
        scales, update, buf = db_ref(losses_seq, grads_seq, 0.9, sigma)
        np.testing.assert_allclose(out.state["buffer"], buf, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.weights, scales, rtol=1e-4)
        np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-4)


def test_db_degenerate_gradients_stay_finite():
    method = _db()
    _, state = method.init(2, num_params=3)
    g = np.array([1.0, 2.0, -2.0])
    out = cases.call(method, {}, state, [1.0, 1.0], np.stack([g, g]))
    np.testing.assert_allclose(out.weights, [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out.update, 0.2 * g, rtol=1e-5)
    out = cases.call(method, {}, state, [1.0, 0.0], np.stack([g, 0 * g]))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
    np.testing.assert_allclose(out.update, 0.1 * g, rtol=1e-5)


def test_db_init_needs_the_parameter_count():
    with pytest.raises(ValueError, match="num_params"):
        _db().init(2)
