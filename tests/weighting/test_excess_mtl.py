"""ExcessMTL against a float64 NumPy transcription of MTL_METHODS.md, by hand,
and its guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser.weighting import excess_mtl


def _build(**overrides):
    cfg = default.get_config().weighting
    cfg.name = "excess_mtl"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return excess_mtl.make_excess_mtl(cfg, (), 1)


def _reference(grads_seq, eta):
    """LibMTL's rule with loops, float64: (w per step, A at the end)."""
    num_tasks, num_params = grads_seq[0].shape
    acc, w, initial, out = (
        np.zeros((num_tasks, num_params)),
        np.ones(num_tasks),
        None,
        [],
    )
    for grads in grads_seq:
        acc = acc + grads**2
        e = np.zeros(num_tasks)
        for t in range(num_tasks):
            for p in range(num_params):
                e[t] += grads[t, p] ** 2 / np.sqrt(acc[t, p] + 1e-7)
        if initial is None:
            initial = e
        else:
            w = w * np.exp(eta * e / initial)
            w = num_tasks * w / w.sum()
        out.append(w)
    return np.array(out), acc


def _run(method, grads_seq):
    num_tasks, num_params = grads_seq[0].shape
    _, state = method.init(num_tasks, num_params=num_params)
    fn = jax.jit(method.aggregate)
    outs = []
    for step, grads in enumerate(grads_seq):
        losses = jnp.ones((num_tasks,), jnp.float32)
        g = jnp.asarray(grads, jnp.float32)
        out = fn({}, state, losses, g, step=jnp.int32(step), rng=None)
        state = out.state
        outs.append(out)
    return outs


@pytest.mark.parametrize("eta", [1e-2, 0.5])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_matches_reference_over_steps(eta, num_tasks):
    rng = np.random.default_rng(num_tasks)
    scales = np.exp(rng.normal(0, 1, (num_tasks, 1)))
    grads_seq = [
        (rng.normal(size=(num_tasks, 8)) * scales * rng.uniform(0.3, 2))
        .astype(np.float32)
        .astype(np.float64)
        for _ in range(6)
    ]
    outs = _run(_build(excess_step_size=eta), grads_seq)
    weights, acc = _reference(grads_seq, eta)
    np.testing.assert_allclose([o.weights for o in outs], weights, rtol=2e-5)
    np.testing.assert_allclose(outs[-1].state["accumulated"], acc, rtol=1e-5)
    last = outs[-1]
    np.testing.assert_allclose(last.head_weights, last.weights)
    np.testing.assert_allclose(
        last.update, weights[-1] @ grads_seq[-1], rtol=1e-4, atol=1e-5
    )


def test_by_hand():
    # One parameter per task. Step 1: g = (1, 2), A = (1, 4), e = (1, 2) (up to
    # the 1e-7), w = 1. Step 2: g = (1, 0): A = (2, 4), e = (1/sqrt 2, 0), so
    # w ~ (exp(eta / sqrt 2), 1), normalised to sum 2.
    eta = 0.5
    outs = _run(_build(excess_step_size=eta), [np.eye(2) * [1, 2], np.eye(2) * [1, 0]])
    np.testing.assert_allclose(outs[0].weights, [1, 1])
    np.testing.assert_allclose(outs[0].state["initial"], [1, 2], rtol=1e-6)
    w = np.array([np.exp(eta / np.sqrt(2)), 1.0])
    np.testing.assert_allclose(outs[1].weights, 2 * w / w.sum(), rtol=1e-6)


def test_task_with_more_excess_gains_weight_and_weights_sum_to_t():
    rng = np.random.default_rng(0)
    grads_seq = [
        np.stack([rng.normal(size=5), 0.1 * rng.normal(size=5)]) for _ in range(3)
    ]
    grads_seq += [np.stack([3 * rng.normal(size=5), 0.1 * rng.normal(size=5)])] * 3
    outs = _run(_build(excess_step_size=0.1), grads_seq)
    for out in outs:
        np.testing.assert_allclose(float(out.weights.sum()), 2.0, rtol=1e-6)
    assert outs[-1].weights[0] > 1.0 > outs[-1].weights[1]


def test_a_task_without_gradient_at_first_waits_for_its_first_excess():
    grads_seq = [np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 3.0]])]
    grads_seq.append(np.array([[1.0, 0.0], [0.0, 3.0]]))
    outs = _run(_build(excess_step_size=0.5), grads_seq)
    for out in outs:
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
    np.testing.assert_allclose(outs[0].state["initial"][1], 0.0)
    # Step 2 sets task 2's initial to its first excess, 3^2 / 3, with factor 1.
    np.testing.assert_allclose(outs[1].state["initial"][1], 3.0, rtol=1e-6)
    assert outs[2].weights[1] != outs[1].weights[1]


def test_weights_cannot_overflow():
    outs = _run(_build(excess_step_size=1e6), [np.eye(2), np.eye(2) * [1e3, 1]])
    assert np.all(np.isfinite(outs[1].weights))
    np.testing.assert_allclose(outs[1].weights, [2.0, 0.0], atol=1e-6)


def test_init_needs_the_parameter_count_and_bad_step_size_is_named():
    with pytest.raises(ValueError, match="num_params"):
        _build().init(2)
    with pytest.raises(ValueError, match="weighting.excess_step_size"):
        _build(excess_step_size=-1.0)
