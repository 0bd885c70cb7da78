"""The optimizer: the learning-rate schedule, weight decay's mask and the clip."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mtl_ser.training import optim


def _cfg(**fields):
    base = dict(
        name="adam",
        learning_rate=1e-2,
        schedule="cosine",
        warmup_steps=10,
        end_lr_factor=0.1,
        weight_decay=0.0,
        momentum=0.9,
        grad_clip=0.0,
    )
    return ml_collections.ConfigDict({**base, **fields})


def test_warmup_rises_linearly_then_cosine_decays_to_its_floor():
    lr = optim.make_schedule(_cfg(), num_steps=110)
    np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 5e-3, 1e-2], rtol=1e-6)
    # Cosine over the 100 steps after warm-up, from 1e-2 to 0.1 * 1e-2.
    half = 1e-3 + (1e-2 - 1e-3) * 0.5 * (1 + np.cos(np.pi * 0.5))
    np.testing.assert_allclose([lr(60), lr(110)], [half, 1e-3], rtol=1e-5)
    flat = optim.make_schedule(_cfg(schedule="constant", warmup_steps=0), 110)
    assert float(flat(0)) == float(flat(109)) == pytest.approx(1e-2)
    with pytest.raises(ValueError, match="optim.schedule='linear'"):
        optim.make_schedule(_cfg(schedule="linear"), 110)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_reaches_model_kernels_only(name):
    params = {
        "model": {"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,))}},
        "weighting": {"log_vars": jnp.ones((3, 2))},  # 2-D, but not the model's.
    }
    tx = optim.make_optimizer(
        _cfg(name=name, weight_decay=0.1, schedule="constant", warmup_steps=0), 10
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    # Zero gradients: only the decay moves anything, by -lr * wd * p.
    np.testing.assert_allclose(updates["model"]["conv"]["kernel"], -1e-3, rtol=1e-6)
    np.testing.assert_array_equal(updates["model"]["conv"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["weighting"]["log_vars"], 0.0)
    with pytest.raises(ValueError, match="optim.name='lamb'"):
        optim.make_optimizer(_cfg(name="lamb"), 10)


def test_clip_with_a_given_norm_is_optax_clip():
    grads = {
        "a": jnp.arange(6.0).reshape(2, 3),
        "b": jnp.full((4,), -0.5),
    }
    norm = optax.tree.norm(grads)
    for max_norm in (0.5, float(norm), 100.0):
        want, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
        ours = optim.clip_by_global_norm(max_norm)
        alone, _ = ours.update(grads, ours.init(grads))
        given, _ = ours.update(grads, ours.init(grads), global_norm=norm)
        for got in (alone, given):
            # One multiply by max_norm / norm instead of optax's divide, then
            # multiply: equal up to the last bit.
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want
            )
    # The chained optimizer passes the norm through to the clip only.
    tx = optax.chain(optim.clip_by_global_norm(1.0), optax.adam(1e-3))
    state = tx.init(grads)
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    want, _ = ref.update(grads, ref.init(grads))
    got, _ = tx.update(grads, state, global_norm=norm)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    # Same state structure as optax's clip: checkpoints restore either way.
    assert jax.tree.structure(state) == jax.tree.structure(ref.init(grads))


def test_clipped_adam_writes_no_clipped_copy_of_the_gradient():
    """Clip + Adam + apply on one kernel is three loops over it: the first
    moment, the second moment and the parameters. optax's clip divides each
    gradient by the norm, and XLA, which does not copy a divide into two
    consumers, wrote the clipped gradient in a fourth loop (the profile's
    broadcast_divide_fusion over AlexNet's first Dense kernel)."""
    tx = optax.chain(optim.clip_by_global_norm(1.0), optax.adam(1e-3))
    params = {"w": jnp.ones((256, 128))}

    def step(params, opt_state, grads):
        norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params, global_norm=norm)
        return optax.apply_updates(params, updates), opt_state

    hlo = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, tx.init(params), params)
        .compile()
        .as_text()
    )
    loops = [
        line
        for line in hlo.splitlines()
        if re.search(r"= f32\[256,128\]\{1,0\} fusion\(", line)
    ]
    assert len(loops) == 3, "\n".join(loops)
