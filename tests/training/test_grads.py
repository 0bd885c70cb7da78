"""The train step's gradient-method path: per-task gradients, heads, rep mode."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser import weighting
from mtl_ser.training import experiment
from mtl_ser.training import grads as grads_lib
from mtl_ser.weighting import graddrop
from mtl_ser.weighting.base import GradOutput, Method
from tests.steps import train_steps


def _summing_method(head_weights=None):
    """A gradient method whose update is the plain sum of the task gradients."""

    def aggregate(params, state, losses, grads, *, step, rng):
        del params, step, rng
        ones = jnp.ones_like(losses)
        heads = ones if head_weights is None else jnp.asarray(head_weights)
        return GradOutput(grads.sum(0), ones, heads, state, {}, ones)

    return Method(
        "sum_grads", lambda num_tasks: ({}, {}), aggregate=aggregate, rep_grad_ok=True
    )


@pytest.fixture
def summing(monkeypatch):
    """Registers `sum_grads` (optionally with head weights) for one test."""

    def register(head_weights=None):
        method = _summing_method(head_weights)
        monkeypatch.setitem(weighting._BUILDERS, "sum_grads", lambda *a: method)
        monkeypatch.setattr(weighting, "METHODS", (*weighting.METHODS, "sum_grads"))
        return method

    return register


def _model_batch(exp):
    """The first training batch with its model input "x", as the step makes it."""
    batch = next(exp.train_iterator())
    x = ((batch["db"] - exp.data.mean) / exp.data.std)[..., None]
    return {"x": x, "labels": batch["labels"], "masks": batch["masks"]}


def _param_grads(state, batch, rng, **kw):
    """grads_lib.param_grads, jitted (op by op it takes seconds)."""
    return jax.jit(functools.partial(grads_lib.param_grads, **kw))(state, batch, rng)


def _run(config, num_steps):
    # One device: these tests are about the gradient path (sharding has its
    # own test), and one device compiles faster.
    _, state, history = train_steps(config, num_steps)
    return jax.device_get(state.params["model"]), history


_REFERENCE = {}


@pytest.mark.parametrize(
    "rep_grad, per_task_grads", [(False, "vmap"), (False, "loop"), (True, "vmap")]
)
def test_summed_task_gradients_reproduce_equal_weighting(
    smoke_config, summing, rep_grad, per_task_grads
):
    # SGD keeps float reassociation noise small (Adam would normalise it up).
    smoke_config.optim.name, smoke_config.optim.learning_rate = "sgd", 0.01
    smoke_config.model.batch_norm = True  # Batch statistics flow through vjp aux.
    smoke_config.weighting.name = "equal"
    if "equal" not in _REFERENCE:  # The same for every parametrisation.
        _REFERENCE["equal"] = _run(smoke_config, 3)
    expected, expected_hist = _REFERENCE["equal"]
    summing()
    smoke_config.weighting.name = "sum_grads"
    smoke_config.weighting.rep_grad = rep_grad
    smoke_config.weighting.per_task_grads = per_task_grads
    got, hist = _run(smoke_config, 3)
    chex.assert_trees_all_close(got, expected, rtol=2e-4, atol=1e-6)
    for a, b in zip(hist, expected_hist, strict=True):
        assert a["train/loss/total"] == pytest.approx(b["train/loss/total"], rel=1e-4)
    assert "train/grad_cos/emotion-gender" in hist[0]


def test_gradient_path_against_separate_backward_passes(smoke_config, summing):
    smoke_config.model.dropout = 0.0
    smoke_config.tasks = "emotion,gender,arousal"
    head_weights = [2.0, 0.0, 0.5]
    method = summing(head_weights=head_weights)
    exp = experiment.Experiment(smoke_config, verbose=False)
    state = jax.device_get(exp.state)
    batch = _model_batch(exp)
    rng = jax.random.PRNGKey(0)
    kw = dict(model=exp.model, tasks=exp.tasks, method=method)
    total, grads, aux, stats = _param_grads(state, batch, rng, **kw)

    def task_loss(params, t):
        outputs, _, _ = grads_lib.apply_model(
            exp.model, state, {"model": params}, batch["x"], train=True, rng=rng
        )
        return grads_lib.task_losses(exp.tasks, outputs, batch)[t]

    task_grad = jax.jit(jax.grad(task_loss), static_argnums=1)
    per_task = [task_grad(state.params["model"], t) for t in range(len(exp.tasks))]
    for name in grads["model"]:
        if name.startswith("head_"):
            t = [task.name for task in exp.tasks].index(name[len("head_") :])
            scale = head_weights[t]
            want = jax.tree.map(lambda g, s=scale: s * g, per_task[t][name])
        else:
            want = jax.tree.map(lambda *g: sum(g), *[p[name] for p in per_task])
        chex.assert_trees_all_close(grads["model"][name], want, rtol=1e-4, atol=1e-7)
    for t, task in enumerate(exp.tasks):
        shared = {k: v for k, v in per_task[t].items() if not k.startswith("head_")}
        norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(shared))))
        assert stats[f"train/task_grad_norm/{task.name}"] == pytest.approx(
            norm, rel=1e-4
        )
    cos = stats[f"train/grad_cos/{exp.tasks[0].name}-{exp.tasks[1].name}"]
    assert -1.0 <= float(cos) <= 1.0
    np.testing.assert_allclose(float(total), float(aux[0].sum()), rtol=1e-6)


def test_three_batch_methods_get_each_batchs_task_gradients(smoke_config, monkeypatch):
    def aggregate(params, state, losses, grads, *, step, rng):
        del params, step, rng
        assert losses.shape == (3, 3) and grads.shape[:2] == (3, 3)
        ones = jnp.ones((3,))
        return GradOutput(grads[2].sum(0), ones, 2 * ones, state, {}, ones)

    method = Method("sum3", lambda t: ({}, {}), aggregate=aggregate, batches_per_step=3)
    monkeypatch.setitem(weighting._BUILDERS, "sum3", lambda *a: method)
    monkeypatch.setitem(weighting._BATCHES_PER_STEP, "sum3", 3)
    monkeypatch.setattr(weighting, "METHODS", (*weighting.METHODS, "sum3"))
    smoke_config.model.dropout = 0.0  # Examples are then independent.
    smoke_config.tasks = "emotion,gender,arousal"
    smoke_config.weighting.name = "sum3"
    exp = experiment.Experiment(smoke_config, verbose=False)
    assert exp.batch_size == 3 * smoke_config.data.batch_size
    state = jax.device_get(exp.state)
    batch = _model_batch(exp)
    assert batch["x"].shape[0] == exp.batch_size
    rng = jax.random.PRNGKey(0)
    kw = dict(model=exp.model, tasks=exp.tasks, method=method)
    _, grads, aux, _ = _param_grads(state, batch, rng, **kw)

    @functools.partial(jax.jit, static_argnums=1)
    def sub_losses(params, k):  # Batch k: rows k, k + 3, ... on their own.
        sub = jax.tree.map(lambda a: a[k::3], batch)
        outputs, _, _ = grads_lib.apply_model(
            exp.model, state, {"model": params}, sub["x"], train=True, rng=rng
        )
        return grads_lib.task_losses(exp.tasks, outputs, sub)

    params = state.params["model"]
    want_losses = np.mean([sub_losses(params, k) for k in range(3)], axis=0)
    np.testing.assert_allclose(aux[0], want_losses, rtol=1e-5)
    last = jax.jit(jax.grad(lambda p: sub_losses(p, 2).sum()))(params)
    every = jax.jit(jax.grad(lambda p: sum(sub_losses(p, k).sum() for k in range(3))))(
        params
    )
    for name in grads["model"]:
        want = jax.tree.map(lambda g: 2 * g, every[name])  # Head weights 2.
        if not name.startswith("head_"):
            want = last[name]
        chex.assert_trees_all_close(grads["model"][name], want, rtol=1e-4, atol=1e-7)


def test_loss_based_methods_log_no_gradient_statistics(smoke_config):
    smoke_config.weighting.name = "equal"
    _, history = _run(smoke_config, 1)
    assert not [k for k in history[0] if "grad_cos" in k or "task_grad_norm" in k]


def test_gradient_method_on_4_devices_equals_1_device(smoke_config):
    assert jax.device_count() == 4
    smoke_config.weighting.name = "mgda"
    smoke_config.weighting.mgda_normalization = "l2"
    smoke_config.optim.name, smoke_config.optim.learning_rate = "sgd", 0.01
    smoke_config.tasks = "emotion,gender,arousal"
    _, one, one_hist = train_steps(smoke_config, 2)
    _, four, four_hist = train_steps(smoke_config, 2, devices=4)
    one, four = jax.device_get((one.params, four.params))
    chex.assert_trees_all_close(one, four, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(one_hist, four_hist, rtol=1e-3, atol=1e-5)


def test_graddrop_with_full_leak_is_equal_weighting(smoke_config):
    """leak=1 keeps every task's representation gradient: the plain sum."""
    smoke_config.optim.name, smoke_config.optim.learning_rate = "sgd", 0.01
    smoke_config.model.batch_norm = True
    smoke_config.weighting.name = "equal"
    if "equal" not in _REFERENCE:
        _REFERENCE["equal"] = _run(smoke_config, 3)
    expected, _ = _REFERENCE["equal"]
    smoke_config.weighting.name = "graddrop"
    smoke_config.weighting.graddrop_leak = 1.0
    assert not smoke_config.weighting.rep_grad  # graddrop needs no flag.
    got, _ = _run(smoke_config, 3)
    chex.assert_trees_all_close(got, expected, rtol=2e-4, atol=1e-6)


def test_graddrop_masks_each_tasks_representation_gradient(smoke_config):
    """leak=0: the trunk receives sum_t R_t * M_t, M_t from the signed R_t."""
    smoke_config.model.dropout = 0.0
    smoke_config.tasks = "emotion,gender,arousal"
    smoke_config.weighting.name = "graddrop"
    exp = experiment.Experiment(smoke_config, verbose=False)
    state = jax.device_get(exp.state)
    batch = _model_batch(exp)
    rng = jax.random.PRNGKey(3)
    method = weighting.make_method(smoke_config.weighting, exp.tasks)
    _, grads, _, _ = grads_lib.rep_grads(
        state, batch, rng, model=exp.model, tasks=exp.tasks, method=method
    )
    model, params = exp.model, state.params["model"]

    def embed(p):
        return model.apply(
            {"params": p}, batch["x"], train=True, method=type(model).embed
        )

    z, trunk_vjp = jax.vjp(embed, params)

    def task_loss(z, t):
        outputs = model.apply({"params": params}, z, method=type(model).heads)
        return grads_lib.task_losses(exp.tasks, outputs, batch)[t]

    per_sample = jnp.stack([jax.grad(task_loss)(z, t) for t in range(3)])
    signed = (per_sample * jnp.sign(z)).sum(1)
    uniform = jax.random.uniform(grads_lib.method_rng(rng), signed.shape[1:])
    masks = graddrop.keep_masks(signed, uniform)
    assert 0 < float(masks.mean()) < 1  # Some features dropped, some kept.
    (want,) = trunk_vjp((per_sample * masks[:, None, :]).sum(0))
    for name in grads["model"]:
        if not name.startswith("head_"):
            chex.assert_trees_all_close(
                grads["model"][name], want[name], rtol=1e-4, atol=1e-7
            )
