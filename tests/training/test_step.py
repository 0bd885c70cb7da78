"""train_step on its own: one step on a hand-made batch, no data pipeline or
loop (training/step.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.training import build, sharding

BATCH = 8  # Splits over the 4 test devices.


def _config(smoke_config):
    c = smoke_config
    c.model.dropout = 0.0  # No randomness in the forward pass.
    c.optim.name, c.optim.momentum, c.optim.learning_rate = "sgd", 0.0, 0.1
    c.optim.schedule, c.optim.grad_clip, c.optim.warmup_steps = "constant", 0.0, 0
    c.weighting.name = "equal"
    return c


def _batch(tasks, config, seed=0):
    rng = np.random.default_rng(seed)
    labels, masks = {}, {}
    for t in tasks:
        if t.kind == tasks_lib.CLASSIFICATION:
            labels[t.name] = rng.integers(0, len(t.classes), BATCH).astype(np.int32)
        else:
            labels[t.name] = rng.normal(size=BATCH).astype(np.float32)
        masks[t.name] = np.ones(BATCH, np.float32)
    shape = (BATCH, config.data.crop_frames, config.features.n_mels, 1)
    x = rng.normal(size=shape).astype(np.float32)
    return {"x": x, "labels": labels, "masks": masks}


def _setup(config):
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    mesh = sharding.make_mesh()
    return tasks, mesh, build.build_steps(c, tasks, mesh)


def test_equal_weighting_is_one_sgd_step_on_the_summed_task_losses(smoke_config):
    c = _config(smoke_config)
    tasks, mesh, steps = _setup(c)
    host = _batch(tasks, c)
    params = jax.device_get(steps.state.params["model"])

    def summed(p):  # Written from the model and tasks, not from the step.
        x = jnp.asarray(host["x"])
        outputs, _ = steps.model.apply({"params": p}, x, train=True)
        labels = {k: jnp.asarray(v) for k, v in host["labels"].items()}
        masks = {k: jnp.asarray(v) for k, v in host["masks"].items()}
        losses = tasks_lib.loss_vector(tasks, outputs, labels, masks)
        return losses.sum(), losses

    (total, losses), grads = jax.value_and_grad(summed, has_aux=True)(params)
    want = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    state, metrics = steps.train_fn(
        steps.state, sharding.from_process_local(host, mesh), None
    )
    got = jax.device_get(state.params["model"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert int(state.step) == 1
    assert float(metrics["train/loss/total"]) == pytest.approx(float(total), rel=1e-5)
    for i, t in enumerate(tasks):
        assert float(metrics[f"train/loss/{t.name}"]) == pytest.approx(
            float(losses[i]), rel=1e-5
        )
        assert float(metrics[f"train/weight/{t.name}"]) == 1.0


@pytest.mark.parametrize("skip", [False, True])
def test_a_non_finite_loss_is_never_applied_and_is_recorded(smoke_config, skip):
    c = _config(smoke_config)
    c.train.on_nonfinite = "skip" if skip else "stop"
    tasks, mesh, steps = _setup(c)
    bad = _batch(tasks, c)
    bad["labels"]["arousal"][:] = np.nan  # Labelled (mask 1): the loss is NaN.
    before = jax.device_get(steps.state)
    state, _ = steps.train_fn(steps.state, sharding.from_process_local(bad, mesh), None)
    after = jax.device_get(state)
    for a, b in zip(
        jax.tree.leaves((after.params, after.opt_state)),
        jax.tree.leaves((before.params, before.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(after.step) == 1  # The counter still advances.
    assert int(after.faults["skipped"]) == 1 and int(after.faults["first_step"]) == 1
    first = after.faults["first_losses"]
    assert np.isnan(first[[t.name for t in tasks].index("arousal")])
    # The next, finite step trains under "skip" and stays frozen under "stop".
    good = sharding.from_process_local(_batch(tasks, c, seed=1), mesh)
    state, _ = steps.train_fn(state, good, None)
    moved = not np.array_equal(
        jax.device_get(state.params["model"])["head_emotion"]["kernel"],
        before.params["model"]["head_emotion"]["kernel"],
    )
    assert moved == skip
