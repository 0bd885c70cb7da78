"""Every weighting method inside the real jitted train step, on the tiny corpus."""

import jax
import numpy as np
import pytest

from mtl_ser import weighting
from mtl_ser.training import experiment, sharding

TRAINABLE = [m for m in weighting.METHODS if m != "fixed"]


def _train(config, num_steps):
    # One device: these tests are about the methods, and compile faster so.
    mesh = sharding.make_mesh(jax.devices()[:1])
    exp = experiment.Experiment(config, mesh=mesh, verbose=False)
    exp.initial = jax.device_get(exp.state)  # The step donates its input.
    it = exp.train_iterator()
    state, history = exp.state, []
    for _ in range(num_steps):
        batch = sharding.from_process_local(next(it), exp.mesh)
        state, metrics = exp.train_fn(state, batch, exp.store)
        history.append(jax.device_get(metrics))
    return exp, jax.device_get(state), history


@pytest.mark.parametrize("name", TRAINABLE)
def test_method_trains_with_finite_losses_and_weights(smoke_config, name):
    smoke_config.weighting.name = name
    smoke_config.tasks = "emotion,gender,arousal"
    exp, state, history = _train(smoke_config, 3)
    for metrics in history:
        for key, value in metrics.items():
            assert np.isfinite(value), (name, key)
    method = weighting.make_method(smoke_config.weighting, exp.tasks)
    if method.needs_grads:
        assert "train/grad_cos/emotion-gender" in history[0]
    before = exp.initial
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, b),
        before.params["model"],
        state.params["model"],
    )
    assert all(jax.tree.leaves(changed)), name


def test_famo_updates_its_logits_after_each_step(smoke_config):
    smoke_config.weighting.name = "famo"
    exp, state, _ = _train(smoke_config, 2)
    initial = exp.initial.weighting_state
    assert int(state.weighting_state["count"]) == 2
    assert not np.allclose(state.weighting_state["logits"], initial["logits"])


@pytest.mark.parametrize("group_type", [1, 2])
def test_gradvac_groups_follow_the_models_modules_and_tensors(smoke_config, group_type):
    from mtl_ser.training import state as state_lib

    smoke_config.weighting.name = "gradvac"
    smoke_config.weighting.gradvac_group_type = group_type
    exp, state, history = _train(smoke_config, 2)
    assert all(np.isfinite(h["train/loss/total"]) for h in history)
    layout = state_lib.shared_layout(state.params["model"])
    modules = {module for module, _ in layout}
    expected = len(modules) if group_type == 1 else len(layout)
    # The smoke model's modules hold several tensors each, so group types 1
    # and 2 give different group counts; otherwise this test checks nothing.
    assert 1 < len(modules) < len(layout)
    rho_hat = state.weighting_state["rho_hat"]
    assert rho_hat.shape == (len(exp.tasks), len(exp.tasks), expected)
    assert np.any(rho_hat != 0)


@pytest.mark.parametrize("name", ["mgda", "gradnorm", "imtl", "aligned_mtl"])
def test_representation_gradient_variants_train(smoke_config, name):
    smoke_config.weighting.name = name
    smoke_config.weighting.rep_grad = True
    smoke_config.tasks = "emotion,gender,arousal"
    _, _, history = _train(smoke_config, 2)
    assert all(np.isfinite(h["train/loss/total"]) for h in history)


def test_rep_grad_is_refused_for_methods_that_do_not_define_it(smoke_config):
    from mtl_ser.training import checks

    smoke_config.weighting.name = "pcgrad"
    smoke_config.weighting.rep_grad = True
    with pytest.raises(checks.ConfigError, match="rep_grad"):
        checks.validate_config(smoke_config)
