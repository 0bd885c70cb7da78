"""GradNorm against hand-computed cases, its defining properties and an
independent float64 NumPy reference of MTL_METHODS.md (written here from the
spec, loops and all)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.weighting import gradnorm
from tests.weighting import gradient_cases as cases


def gradnorm_ref(scale, losses, first_means, grads, alpha):
    """GradNorm epoch >= 1 in float64; dL_grad/ds by central differences."""
    num_tasks = len(scale)

    def weights(s):
        e = np.exp(s - s.max())
        return num_tasks * e / e.sum()

    norms = np.array([np.sqrt(np.sum(g * g)) for g in grads])
    n0 = weights(scale) * norms
    rel = losses / first_means
    target = n0.mean() * (rel / rel.mean()) ** alpha  # Held fixed (stopgrad).

    def objective(s):
        return np.abs(weights(s) * norms - target).sum()

    grad = np.zeros(num_tasks)
    for t in range(num_tasks):
        h = np.zeros(num_tasks)
        h[t] = 1e-6
        grad[t] = (objective(scale + h) - objective(scale - h)) / 2e-6
    w = weights(scale)
    return w, w @ grads, grad, objective, (n0, target)


def _gradnorm_after_epoch0(num_tasks, epoch0_losses, steps_per_epoch=2):
    """A GradNorm method and state after the steps of epoch 0."""
    method = cases.build(gradnorm.make_gradnorm, steps_per_epoch)
    params, state = method.init(num_tasks)
    zeros = np.zeros((num_tasks, 4))
    for step, losses in enumerate(epoch0_losses):
        state = cases.call(method, params, state, losses, zeros, step).state
    return method, params, state


def test_gradnorm_epoch0_is_equal_weighting():
    method = cases.build(gradnorm.make_gradnorm, 3)
    _, state = method.init(2)
    params = {"loss_scale": jnp.array([0.3, -0.4])}  # Unused in epoch 0.
    grads = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 4.0]])
    out = cases.call(method, params, state, [0.5, 2.0], grads, step=2)
    np.testing.assert_allclose(out.update, [1.0, 1.0, 4.0])
    np.testing.assert_array_equal(out.weights, [1, 1])
    np.testing.assert_array_equal(out.rep_coeffs, [1, 1])
    np.testing.assert_array_equal(out.param_grads["loss_scale"], [0, 0])
    np.testing.assert_allclose(out.state["history"]["sum"], [0.5, 2.0])


def test_gradnorm_uses_epoch0_mean_loss():
    # Epoch-0 means (1, 2) and (3, 2) -> (2, 2); step 2 opens epoch 1.
    method, params, state = _gradnorm_after_epoch0(2, [[1.0, 2.0], [3.0, 2.0]])
    grads = np.array([[3.0, 0.0], [0.0, 1.0]])
    out = cases.call(method, params, state, [2.0, 2.0], grads, step=2)
    np.testing.assert_allclose(out.state["history"]["first"], [2.0, 2.0])
    # Equal relative losses: target = mean N = 2, N = (3, 1); s_1 goes down.
    # dL/dw = (+3, -1); J_w = 2 (diag p - p p^T) with p = 1/2: (2, -2).
    np.testing.assert_allclose(out.param_grads["loss_scale"], [2.0, -2.0])
    np.testing.assert_allclose(out.weights, [1.0, 1.0])
    np.testing.assert_allclose(out.update, [3.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_gradnorm_matches_reference(seed):
    for num_tasks, grads, losses in cases.draws(seed):
        rng = np.random.default_rng(seed + num_tasks)
        epoch0 = rng.uniform(0.5, 2.0, (2, num_tasks)).astype(np.float32)
        method, _, state = _gradnorm_after_epoch0(num_tasks, epoch0)
        scale = rng.normal(0, 0.5, num_tasks).astype(np.float32)
        params = {"loss_scale": jnp.asarray(scale)}
        out = cases.call(method, params, state, losses, grads, step=2)
        w, update, ds, _, (n, target) = gradnorm_ref(
            scale.astype(float), losses, epoch0.astype(float).mean(0), grads, 1.5
        )
        _, n_jnp, target_jnp = gradnorm.gradnorm_scale_grad(
            jnp.asarray(scale),
            jnp.asarray(losses, jnp.float32),
            jnp.asarray(epoch0.mean(0)),
            jnp.asarray(grads, jnp.float32),
            alpha=1.5,
        )
        np.testing.assert_allclose(n_jnp, n, rtol=1e-5)
        np.testing.assert_allclose(target_jnp, target, rtol=1e-5)
        np.testing.assert_allclose(out.weights, w, rtol=1e-5)
        np.testing.assert_allclose(out.rep_coeffs, w, rtol=1e-5)
        np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.param_grads["loss_scale"], ds, atol=1e-4)


def test_gradnorm_step_moves_norms_toward_targets():
    # Plain gradient descent on s with the returned gradient lowers
    # sum |N_t - target_t| on a fixed G (targets held, as LibMTL's stopgrad).
    for num_tasks, grads, losses in cases.draws(3):
        rng = np.random.default_rng(num_tasks)
        epoch0 = rng.uniform(0.5, 2.0, (2, num_tasks)).astype(np.float32)
        method, params, state = _gradnorm_after_epoch0(num_tasks, epoch0)
        out = cases.call(method, params, state, losses, grads, step=2)
        ds = np.asarray(out.param_grads["loss_scale"], float)
        assert np.abs(ds).max() > 0
        scale = np.ones(num_tasks)
        _, _, _, objective, _ = gradnorm_ref(
            scale, losses, epoch0.astype(float).mean(0), grads, 1.5
        )
        assert objective(scale - 1e-3 * ds) < objective(scale)


def test_gradnorm_keeps_normalising_by_epoch0_in_later_epochs():
    # Epoch 0 mean (1, 4), epoch 1 mean (3, 3); at step 4 (epoch 2) the
    # relative losses are L / (1, 4) = (2, 1) -> r = (4/3, 2/3).
    epochs = [[1.0, 4.0], [1.0, 4.0], [3.0, 3.0], [3.0, 3.0]]
    method, params, state = _gradnorm_after_epoch0(2, epochs)
    grads = np.array([[1.0, 0.0], [0.0, 1.0]])  # N = (1, 1), mean 1.
    out = cases.call(method, params, state, [2.0, 4.0], grads, step=4)
    np.testing.assert_allclose(out.state["history"]["first"], [1.0, 4.0])
    # target = (4/3, 2/3)^1.5: task 1 below its target, task 2 above.
    # dL/dw = (-1, +1); J_w^T at p = 1/2: (-1, +1).
    np.testing.assert_allclose(out.param_grads["loss_scale"], [-1.0, 1.0])


def test_gradnorm_zero_gradient_and_zero_first_loss_stay_finite():
    method, params, state = _gradnorm_after_epoch0(3, [[0.0, 1.0, 2.0]], 1)
    grads = np.array([[0.0, 0.0], [1.0, -1.0], [1.0, 1.0]])
    out = cases.call(method, params, state, [0.0, 1.0, 3.0], grads, step=1)
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(leaf))
    assert np.abs(out.param_grads["loss_scale"]).max() > 0


def test_gradnorm_identical_gradients():
    # Same gradient, same relative loss: N_t equal, targets = N, gradient 0.
    method, params, state = _gradnorm_after_epoch0(2, [[1.0, 1.0]], 1)
    g = [1.0, 2.0, -2.0]
    out = cases.call(method, params, state, [0.5, 0.5], [g, g], step=1)
    np.testing.assert_allclose(out.param_grads["loss_scale"], [0, 0], atol=1e-6)
    np.testing.assert_allclose(out.update, 2 * np.array(g), rtol=1e-6)
