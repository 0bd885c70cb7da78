"""optim: the fused Adam(W) is optax's chain, bit for bit, with optax's state."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mtl_ser.training import loop, optim, sharding


def _params(seed=0):
    """A params dict shaped like the train state's: model kernels and biases,
    and the weighting method's parameters (never decayed)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "model": {
            "conv": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 4))},
            "dense": {
                "kernel": jax.random.normal(keys[1], (8, 5)),
                "bias": jax.random.normal(keys[2], (5,)),
            },
        },
        "weighting": {"log_vars": jax.random.normal(keys[3], (3,))},
    }


def _grads(step, scale):
    """Gradients that change every step; `scale` moves their global norm."""
    g = _params(seed=100 + step)
    return jax.tree.map(lambda x: scale * x, g)


def _run(tx, steps, scale, pass_norm):
    """`steps` jitted updates; returns the params and the state after each."""
    params = _params()
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        extra = {"global_norm": optax.tree.norm(grads)} if pass_norm else {}
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    history = []
    for k in range(steps):
        params, state = step(params, state, _grads(k, scale))
        history.append((params, state))
    return history


@pytest.mark.parametrize("weight_decay", [None, 0.05])
@pytest.mark.parametrize("max_norm", [0.0, 1.0])
@pytest.mark.parametrize("scale", [1e-3, 10.0])  # Clipping off / on when max_norm=1.
def test_fused_adam_is_optax_bitwise(weight_decay, max_norm, scale):
    schedule = optax.cosine_decay_schedule(1e-2, 20, alpha=0.1)
    kwargs = dict(weight_decay=weight_decay, max_norm=max_norm)
    fused = optim.fused_adam(schedule, **kwargs)
    reference = optim.reference_adam(schedule, **kwargs)
    for pass_norm in (False, True):
        got = _run(fused, 5, scale, pass_norm)
        want = _run(reference, 5, scale, pass_norm=False)
        for (p, s), (p_ref, s_ref) in zip(got, want, strict=True):
            assert jax.tree.structure(s) == jax.tree.structure(s_ref)
            jax.tree.map(np.testing.assert_array_equal, (p, s), (p_ref, s_ref))
    # The runs moved every parameter (the comparison is not of two no-ops).
    moved = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), got[-1][0], _params()
    )
    assert min(jax.tree.leaves(moved)) > 1e-3


def test_fused_adam_decays_model_kernels_only():
    schedule = optax.constant_schedule(1e-2)
    zero = jax.tree.map(jnp.zeros_like, _params())
    tx = optim.fused_adam(schedule, weight_decay=0.5)
    updates, _ = tx.update(zero, tx.init(_params()), _params())
    # With zero gradients the update is the decay alone: -lr * wd * p on kernels.
    p = _params()
    np.testing.assert_allclose(
        updates["model"]["dense"]["kernel"],
        -1e-2 * 0.5 * p["model"]["dense"]["kernel"],
        rtol=1e-6,
    )
    for leaf in (updates["model"]["dense"]["bias"], updates["weighting"]["log_vars"]):
        np.testing.assert_array_equal(leaf, 0.0)
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(zero, tx.init(_params()))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_make_optimizer_states_restore_across_fused(name):
    cfg = ml_collections.ConfigDict(
        dict(
            name=name,
            learning_rate=1e-3,
            warmup_steps=2,
            schedule="cosine",
            end_lr_factor=0.0,
            weight_decay=0.01,
            momentum=0.9,
            grad_clip=1.0,
        )
    )
    states = []
    for fused in (True, False):
        cfg.fused = fused
        states.append(optim.make_optimizer(cfg, 10).init(_params()))
    # The same state structure either way: a checkpoint written with one
    # restores into the other (optim.fused is runtime-only for resumes).
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad"])
def test_train_steps_with_fused_adam_are_bitwise_optax(smoke_config, weighting):
    """Three train steps of the smoke model give bitwise the same parameters and
    optimizer state with the fused Adam as with optax's chain."""
    smoke_config.weighting.name = weighting
    results = []
    for fused in (True, False):
        smoke_config.optim.fused = fused
        mesh = sharding.make_mesh(jax.devices()[:1])
        exp = loop.Experiment(smoke_config, mesh=mesh, verbose=False)
        batches = exp.train_iterator()
        state = exp.state
        init = jax.device_get(state.params)  # The step donates the state.
        for _ in range(3):
            batch = sharding.from_process_local(next(batches), exp.mesh)
            state, _ = exp.train_fn(state, batch)
        results.append(jax.device_get((state.params, state.opt_state)))
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), results[0][0], init)
    assert max(jax.tree.leaves(moved)) > 0
    jax.tree.map(np.testing.assert_array_equal, results[0], results[1])
