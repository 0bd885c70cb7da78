"""Tests for the AlexNet trunk: width, input size, dropout, BatchNorm, bfloat16."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser import models
from mtl_ser.models import layers
from tests.models.common import HEADS, SMALL, init_shapes, rng_key


def _init(model, x):
    """Initialises `model` on `x`.

    Eagerly: the real runs below share one input shape and config, so the
    per-op compilations are cached across tests, which beats compiling a
    whole jitted graph per test on a small CPU.
    """
    return model.init({"params": rng_key(0)}, x, train=False)


def test_width_scales_channels_and_hidden():
    model = models.make_model("alexnet", HEADS, width=0.5, hidden=100)
    params = init_shapes(model, (1, 128, 64, 1))["params"]["trunk"]
    assert params["conv1"]["kernel"].shape == (11, 11, 1, 32)
    assert params["conv2"]["kernel"].shape == (5, 5, 32, 96)
    assert params["classifier"]["fc1"]["kernel"].shape == (6 * 6 * 128, 50)
    assert params["classifier"]["fc2"]["kernel"].shape == (50, 50)
    assert layers.scaled(64, 0.001) == 1


def test_alexnet_minimum_input_size():
    model = models.make_model("alexnet", HEADS, **SMALL)
    init_shapes(model, (1, 63, 63, 1))
    with pytest.raises(ValueError, match="at least 63"):
        init_shapes(model, (1, 64, 62, 1))
    with pytest.raises(ValueError, match="at least 63"):
        init_shapes(model, (2, 64, 40, 1))
    with pytest.raises(ValueError, match="at least 32"):
        init_shapes(models.make_model("vgg11", HEADS, **SMALL), (1, 31, 64, 1))


@pytest.fixture(scope="module")
def alexnet_bn():
    """A small AlexNet with BatchNorm, its variables and an input batch."""
    model = models.make_model("alexnet", HEADS, batch_norm=True, **SMALL)
    x = jax.random.normal(rng_key(1), (2, 64, 64, 1))
    variables = _init(model, x)
    return model, variables, x


def test_dropout_only_in_train(alexnet_bn):
    model, variables, x = alexnet_bn

    def train_embedding(variables, key):
        (_, embedding), _ = model.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        return embedding

    first = train_embedding(variables, rng_key(2))
    second = train_embedding(variables, rng_key(3))
    assert not np.allclose(first, second)

    evaluate = functools.partial(model.apply, train=False)
    _, first = evaluate(variables, x)
    _, second = evaluate(variables, x)
    np.testing.assert_array_equal(first, second)


def test_batch_norm_updates_and_uses_stats(alexnet_bn):
    model, variables, x = alexnet_bn
    _, updates = model.apply(
        variables,
        x,
        train=True,
        rngs={"dropout": rng_key(2)},
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: mdl.name == "conv1",
    )
    # momentum 0.9: new running mean = 0.9 * 0 + 0.1 * batch mean.
    conv1 = updates["intermediates"]["trunk"]["conv1"]["__call__"][0]
    running = updates["batch_stats"]["trunk"]["bn1"]["mean"]
    np.testing.assert_allclose(running, 0.1 * conv1.mean(axis=(0, 1, 2)), atol=1e-6)
    old_stats = variables["batch_stats"]
    assert not np.allclose(running, old_stats["trunk"]["bn1"]["mean"])

    # Eval reads the running stats and does not change them.
    new_vars = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    (_, with_new), unchanged = model.apply(
        new_vars, x, train=False, mutable=["batch_stats"]
    )
    chex.assert_trees_all_equal(unchanged["batch_stats"], updates["batch_stats"])
    _, with_old = model.apply(variables, x, train=False)
    assert not np.allclose(with_new, with_old)


def test_bfloat16_close_to_float32():
    kwargs = dict(batch_norm=True, **SMALL)
    model32 = models.make_model("alexnet", HEADS, **kwargs)
    model16 = models.make_model("alexnet", HEADS, dtype=jnp.bfloat16, **kwargs)
    x = jax.random.normal(rng_key(1), (2, 64, 64, 1))
    variables = _init(model32, x)
    out32, emb32 = model32.apply(variables, x, train=False)
    out16, emb16 = model16.apply(variables, x, train=False)
    chex.assert_trees_all_equal_dtypes(out16, out32)
    assert emb16.dtype == jnp.float32
    assert not np.array_equal(emb16, emb32)  # really computed in bfloat16
    scale = float(jnp.max(jnp.abs(emb32)))
    np.testing.assert_allclose(emb16, emb32, atol=0.05 * scale)
    for task, _ in HEADS:
        scale = float(jnp.max(jnp.abs(out32[task])))
        np.testing.assert_allclose(out16[task], out32[task], atol=0.05 * scale)
