"""Loss-based weighting (DWA, RLW, GLS, FAMO, and every builder in loss_based).

Each method is checked against closed forms or an independent float64 NumPy
reference of MTL_METHODS.md (LibMTL), plus the guards that keep it finite.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser import tasks as tasks_lib
from mtl_ser.weighting import loss_based

TASKS = tasks_lib.make_tasks("emotion,gender,arousal", "a,b,c,d", "mse")
LOSSES = jnp.array([1.2, 0.5, 2.0])


def _cfg(name, **overrides):
    """The default weighting block with `name` (and any overrides) set."""
    cfg = default.get_config().weighting
    cfg.name = name
    if name == "fixed":
        cfg.fixed_weights = "1,0.5,2"  # No default: one weight per task.
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _build(name, steps_per_epoch=1, **overrides):
    return loss_based.BUILDERS[name](_cfg(name, **overrides), TASKS, steps_per_epoch)


def _step(i):
    return jnp.asarray(i, jnp.int32)


def _total_grad(method, params, state, losses, **kw):
    """d total / d losses, by autodiff."""
    return jax.grad(lambda x: method.combine(params, state, x, **kw)[0])(losses)


def _tree_signature(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


# ---------------------------------------------------------------- all methods


@pytest.mark.parametrize("name", sorted(loss_based.BUILDERS))
def test_every_builder_runs_jitted_from_the_default_config(name):
    method = _build(name, steps_per_epoch=2)
    assert method.name == name and not method.needs_grads
    params, state = method.init(len(TASKS))
    combine = jax.jit(method.combine)
    kw = dict(step=_step(3), rng=jax.random.PRNGKey(0))
    total, weights, new_state = combine(params, state, LOSSES, **kw)
    assert np.isfinite(float(total))
    assert weights.shape == (3,) and np.all(np.isfinite(weights))
    assert _tree_signature(new_state) == _tree_signature(state)
    # The logged weights are the effective ones: d total / d losses.
    np.testing.assert_allclose(
        weights, _total_grad(method, params, state, LOSSES, **kw), rtol=1e-5
    )
    if method.after_step is not None:
        after = jax.jit(method.after_step)(params, new_state, LOSSES, 0.9 * LOSSES)
        assert _tree_signature(after) == _tree_signature(state)
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(after))


# ------------------------------------------------------------------------ DWA


def _dwa_reference(step_losses, steps_per_epoch, temperature):
    """Per-step DWA weights from LibMTL's rule, float64, loops."""
    step_losses = np.asarray(step_losses, np.float64)
    num_steps, num_tasks = step_losses.shape
    means = [
        step_losses[e * steps_per_epoch : (e + 1) * steps_per_epoch].mean(0)
        for e in range(num_steps // steps_per_epoch)
    ]
    out = []
    for s in range(num_steps):
        e = s // steps_per_epoch
        if e <= 1:
            out.append(np.ones(num_tasks))
        else:
            r = means[e - 1] / means[e - 2] / temperature
            out.append(num_tasks * np.exp(r) / np.exp(r).sum())
    return np.array(out)


def _run_dwa(method, step_losses):
    params, state = method.init(np.shape(step_losses)[1])
    combine = jax.jit(method.combine)
    weights = []
    for i, losses in enumerate(step_losses):
        total, w, state = combine(params, state, jnp.asarray(losses), step=_step(i))
        np.testing.assert_allclose(total, np.dot(w, losses), rtol=1e-6)
        weights.append(np.asarray(w))
    return np.array(weights)


@pytest.mark.parametrize("temperature", [2.0, 0.5])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_dwa_matches_reference_over_epochs(temperature, num_tasks):
    steps_per_epoch, epochs = 3, 5
    rng = np.random.default_rng(num_tasks)
    step_losses = rng.uniform(0.2, 3.0, (steps_per_epoch * epochs, num_tasks))
    method = _build("dwa", steps_per_epoch, dwa_temperature=temperature)
    got = _run_dwa(method, step_losses.astype(np.float32))
    want = _dwa_reference(step_losses, steps_per_epoch, temperature)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got.sum(1), num_tasks, rtol=1e-6)
    for e in range(epochs):  # Constant within each epoch.
        block = got[e * steps_per_epoch : (e + 1) * steps_per_epoch]
        np.testing.assert_array_equal(block, np.broadcast_to(block[0], block.shape))
    assert not np.allclose(got[-1], 1.0)  # The dynamic branch did run.


def test_dwa_by_hand():
    # One step per epoch. Epoch 2: r = (2/1, 0.5/1) = (2, 0.5); / T=2 -> (1, 0.25);
    # w = 2 softmax = 2 / (1 + e^-0.75), 2 / (1 + e^0.75) = 1.358357, 0.641643.
    method = _build("dwa", 1)
    got = _run_dwa(method, np.array([[1, 1], [2, 0.5], [5, 5]], np.float32))
    np.testing.assert_allclose(got[:2], 1.0)
    np.testing.assert_allclose(got[2], [1.358357, 0.641643], rtol=1e-5)


def test_dwa_zero_mean_loss_stays_finite():
    # Task 1 has mean 0 in epoch 0 (LibMTL: 0/0 = NaN); its ratio is read as 1.
    method = _build("dwa", 1, dwa_temperature=1.0)
    got = _run_dwa(method, np.array([[1, 0], [3, 0.5], [1, 1]], np.float32))
    assert np.all(np.isfinite(got))
    e = np.exp([3.0, 1.0])
    np.testing.assert_allclose(got[2], 2 * e / e.sum(), rtol=1e-5)


# ------------------------------------------------------------------------ RLW


def test_rlw_weights_are_on_the_simplex_and_follow_the_key():
    method = _build("rlw")
    params, state = method.init(3)
    draws = [
        method.combine(params, state, LOSSES, rng=jax.random.PRNGKey(k))[1]
        for k in range(5)
    ]
    for w in draws:
        assert np.all(np.asarray(w) > 0)
        np.testing.assert_allclose(float(w.sum()), 1.0, rtol=1e-6)
    assert len({tuple(np.round(np.asarray(w), 6)) for w in draws}) == 5
    again = method.combine(params, state, LOSSES, rng=jax.random.PRNGKey(2))[1]
    np.testing.assert_array_equal(again, draws[2])


def test_rlw_distribution_is_softmax_of_a_standard_normal():
    num_tasks, n = 3, 4000
    method = _build("rlw")
    params, state = method.init(num_tasks)
    keys = jax.random.split(jax.random.PRNGKey(7), n)
    losses = jnp.ones((num_tasks,))
    weights = jax.jit(
        jax.vmap(lambda k: method.combine(params, state, losses, rng=k)[1])
    )(keys)
    weights = np.asarray(weights, np.float64)
    # Symmetry: E[w_t] = 1/T.
    np.testing.assert_allclose(weights.mean(0), 1 / num_tasks, atol=0.02)
    # log w - mean log w = z - mean z: centred normal, variance 1 - 1/T.
    centred = np.log(weights) - np.log(weights).mean(1, keepdims=True)
    np.testing.assert_allclose(centred.var(0), 1 - 1 / num_tasks, rtol=0.08)
    np.testing.assert_allclose(centred.mean(0), 0.0, atol=0.05)


# ------------------------------------------------------------------------ GLS


def test_gls_by_hand():
    # prod L = 1.2 * 0.5 * 2 = 1.2; total = 1.2^(1/3) = 1.0626586.
    method = _build("gls")
    params, state = method.init(3)
    total, weights, _ = method.combine(params, state, LOSSES)
    assert float(total) == pytest.approx(1.0626586, rel=1e-6)
    np.testing.assert_allclose(
        weights, 1.0626586 / (3 * np.array([1.2, 0.5, 2.0])), rtol=1e-6
    )


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_gls_matches_float64_reference(num_tasks):
    method = _build("gls")
    params, state = method.init(num_tasks)
    rng = np.random.default_rng(10 + num_tasks)
    for _ in range(3):
        losses = rng.uniform(0.05, 4.0, num_tasks)
        total, weights, _ = jax.jit(method.combine)(
            params, state, jnp.asarray(losses, jnp.float32)
        )
        want_total = np.prod(losses) ** (1 / num_tasks)
        assert float(total) == pytest.approx(want_total, rel=1e-5)
        np.testing.assert_allclose(
            weights, want_total / (num_tasks * losses), rtol=1e-5
        )
        grad = _total_grad(method, params, state, jnp.asarray(losses, jnp.float32))
        np.testing.assert_allclose(weights, grad, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-5, 1e5])
def test_gls_does_not_under_or_overflow(scale):
    # A naive float32 product of ten such losses is 0 or inf.
    with np.errstate(over="ignore", under="ignore"):
        assert np.prod(np.full(10, scale, np.float32)) in (0.0, np.inf)
    method = _build("gls")
    losses = jnp.full((10,), scale, jnp.float32)
    total, weights, _ = method.combine({}, {}, losses)
    assert float(total) == pytest.approx(scale, rel=1e-5)
    np.testing.assert_allclose(weights, 0.1, rtol=1e-5)


def test_gls_zero_loss_gets_zero_weight_and_no_nan():
    method = _build("gls")
    losses = jnp.array([0.0, 0.5, 2.0])
    total, weights, _ = method.combine({}, {}, losses)
    grad = _total_grad(method, {}, {}, losses)
    assert np.all(np.isfinite(grad))
    want_total = (1e-8 * 0.5 * 2.0) ** (1 / 3)
    assert float(total) == pytest.approx(want_total, rel=1e-5)
    np.testing.assert_allclose(
        weights, [0.0, want_total / 1.5, want_total / 6.0], rtol=1e-5
    )
    np.testing.assert_allclose(grad, weights, rtol=1e-5)


# ----------------------------------------------------------------------- FAMO


class _TorchAdamRef:
    """torch.optim.Adam (single tensor, coupled L2 weight decay), float64."""

    def __init__(self, param, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.param = np.array(param, np.float64)
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = np.zeros_like(self.param)
        self.v = np.zeros_like(self.param)
        self.t = 0

    def step(self, grad):
        b1, b2 = self.betas
        grad = grad + self.wd * self.param
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad * grad
        bias1, bias2 = 1 - b1**self.t, 1 - b2**self.t
        denom = np.sqrt(self.v) / np.sqrt(bias2) + self.eps
        self.param = self.param - (self.lr / bias1) * self.m / denom


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _famo_reference_weights(xi, losses):
    z = _softmax(xi)
    d = losses + 1e-8
    c = (z / d).sum()
    return z / (c * d), (z * np.log(d)).sum() / c


def _famo_reference_grad(xi, before, after):
    """J_softmax(xi)^T delta, written out as the full Jacobian."""
    z = _softmax(xi)
    delta = np.log(before + 1e-8) - np.log(after + 1e-8)
    jac = np.diag(z) - np.outer(z, z)
    return jac.T @ delta


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_famo_matches_torch_adam_reference(num_tasks):
    method = _build("famo")
    params, state = method.init(num_tasks)
    ref = _TorchAdamRef(np.zeros(num_tasks), lr=0.025, weight_decay=1e-3)
    combine, after_step = jax.jit(method.combine), jax.jit(method.after_step)
    rng = np.random.default_rng(20 + num_tasks)
    for _ in range(8):
        before = rng.uniform(0.1, 3.0, num_tasks)
        after = before * rng.uniform(0.5, 1.1, num_tasks)
        total, weights, state = combine(params, state, jnp.asarray(before, "float32"))
        want_w, want_total = _famo_reference_weights(ref.param, before)
        np.testing.assert_allclose(weights, want_w, rtol=1e-5, atol=1e-7)
        assert float(total) == pytest.approx(want_total, rel=1e-5, abs=1e-6)
        state = after_step(
            params,
            state,
            jnp.asarray(before, jnp.float32),
            jnp.asarray(after, jnp.float32),
        )
        ref.step(_famo_reference_grad(ref.param, before, after))
        np.testing.assert_allclose(state["logits"], ref.param, rtol=2e-4, atol=1e-6)
    assert int(state["count"]) == 8
    np.testing.assert_allclose(state["mu"], ref.m, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(state["nu"], ref.v, rtol=2e-4, atol=1e-10)


def test_famo_effective_weights_sum_to_one_and_match_autodiff():
    method = _build("famo")
    params, state = method.init(3)
    state = {**state, "logits": jnp.array([0.3, -0.2, 0.1])}
    total, weights, _ = method.combine(params, state, LOSSES)
    np.testing.assert_allclose(float(weights.sum()), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        weights, _total_grad(method, params, state, LOSSES), rtol=1e-5
    )


def test_famo_raises_the_logit_of_the_task_that_improved_less():
    method = _build("famo")
    params, state = method.init(2)
    before, after = jnp.array([1.0, 1.0]), jnp.array([0.5, 0.9])
    new = method.after_step(params, state, before, after)
    assert new["logits"][1] > 0 > new["logits"][0]
    _, weights, _ = method.combine(params, new, before)
    assert weights[1] > weights[0]


def test_famo_zero_and_negative_losses_stay_finite():
    # 0: LibMTL's 1e-8 keeps it finite. Slightly negative (1 - CCC rounding):
    # read as 0 instead of LibMTL's log of a negative number.
    method = _build("famo")
    params, state = method.init(3)
    for losses in (jnp.array([0.0, 0.5, 2.0]), jnp.array([-1e-7, 0.5, 2.0])):
        total, weights, _ = method.combine(params, state, losses)
        grad = _total_grad(method, params, state, losses)
        new = method.after_step(params, state, losses, jnp.array([0.1, 0.4, 1.0]))
        assert np.isfinite(float(total))
        assert np.all(np.isfinite(grad)) and np.all(np.isfinite(weights))
        np.testing.assert_allclose(grad, weights, rtol=1e-5)
        assert np.all(np.isfinite(new["logits"]))
