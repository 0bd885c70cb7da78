"""Tests for mtl_ser.models' registry and make_model across every trunk."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser import models
from mtl_ser.models import layers
from tests.models.common import (
    HEADS,
    SMALL,
    TOTAL_COUNTS,
    VGG_CONVS,
    init_shapes,
    param_count,
    rng_key,
)

TRUNK_NAMES = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19")
ALEXNET_CONVS = ((11, 64), (5, 192), (3, 384), (3, 256), (3, 256))


def _conv_params(kernel, cin, cout):
    """Weights plus biases of a square conv."""
    return kernel * kernel * cin * cout + cout


def _dense_params(cin, cout):
    return cin * cout + cout


def _alexnet_conv_params(cin):
    total = 0
    for kernel, cout in ALEXNET_CONVS:
        total += _conv_params(kernel, cin, cout)
        cin = cout
    return total


def _vgg_conv_params(depth, cin):
    total = 0
    for cout in VGG_CONVS[depth]:
        total += _conv_params(3, cin, cout)
        cin = cout
    return total


def _classifier_params(flat, classes=1000):
    """torchvision's three classifier Linears (4096, 4096, classes)."""
    return (
        _dense_params(flat, 4096)
        + _dense_params(4096, 4096)
        + _dense_params(4096, classes)
    )


def _conv_count(variables):
    trunk = variables["params"]["trunk"]
    return sum(param_count(v) for k, v in trunk.items() if k.startswith("conv"))


# torchvision's conv parameter counts (3 input channels), each also checked
# against the formula sum(k * k * cin * cout + cout) below.
CONV_COUNTS = {
    "alexnet": 2_469_696,
    "vgg11": 9_220_480,
    "vgg13": 9_404_992,
    "vgg16": 14_714_688,
    "vgg19": 20_024_384,
}


def _formula_counts(name, cin):
    """(conv params, total params) of torchvision's model by formula."""
    if name == "alexnet":
        conv = _alexnet_conv_params(cin)
        return conv, conv + _classifier_params(256 * 6 * 6)
    conv = _vgg_conv_params(int(name[3:]), cin)
    return conv, conv + _classifier_params(512 * 7 * 7)


@pytest.mark.parametrize("name", TRUNK_NAMES)
def test_formula_matches_torchvision_counts(name):
    assert _formula_counts(name, 3) == (CONV_COUNTS[name], TOTAL_COUNTS[name])


@pytest.mark.parametrize("name", TRUNK_NAMES)
def test_param_counts_match_torchvision(name):
    model = models.make_model(name, (("imagenet", 1000),))
    variables = init_shapes(model, (1, 224, 224, 3))
    assert _conv_count(variables) == CONV_COUNTS[name]
    assert param_count(variables["params"]) == TOTAL_COUNTS[name]


@pytest.mark.parametrize("name", TRUNK_NAMES)
def test_param_counts_one_channel(name):
    # Only conv1 sees the input: k * k * 64 weights per input channel, so one
    # channel has 2 * k * k * 64 fewer parameters than three.
    kernel = 11 if name == "alexnet" else 3
    model = models.make_model(name, (("imagenet", 1000),))
    variables = init_shapes(model, (1, 224, 224, 1))
    conv, total = _formula_counts(name, 1)
    assert conv == CONV_COUNTS[name] - 2 * kernel * kernel * 64
    assert _conv_count(variables) == conv
    assert param_count(variables["params"]) == total


# (name, input shape) for spectrogram-sized inputs. [2, 64, 64, 1] leaves a 1x1
# AlexNet map and a 2x2 VGG map, smaller than the pool output; [2, 64, 40, 1]
# is VGG only, as AlexNet (like torchvision's) needs T, F >= 63.
SHAPE_CASES = [
    (name, shape)
    for name in TRUNK_NAMES
    for shape in ((2, 128, 64, 1), (2, 64, 64, 1), (2, 96, 80, 3))
] + [(name, (2, 64, 40, 1)) for name in TRUNK_NAMES[1:]]


@pytest.mark.parametrize("batch_norm", (False, True))
@pytest.mark.parametrize("name,shape", SHAPE_CASES)
def test_output_shapes(name, shape, batch_norm):
    model = models.make_model(name, HEADS, batch_norm=batch_norm, **SMALL)
    variables = init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    apply = functools.partial(model.apply, train=False)
    outputs, embedding = jax.eval_shape(apply, variables, x)
    assert set(outputs) == {task for task, _ in HEADS}
    for task, size in HEADS:
        chex.assert_shape(outputs[task], (2, size))
        assert outputs[task].dtype == jnp.float32
    chex.assert_shape(embedding, (2, 16))
    assert ("batch_stats" in variables) == batch_norm


@pytest.mark.parametrize("name", ("alexnet", "vgg11"))
def test_tiny_input_forward_is_finite(name):
    # The feature map is smaller than the adaptive pool output, so the pool
    # repeats bins; the result must still be well defined.
    model = models.make_model(name, HEADS, batch_norm=True, **SMALL)
    x = jax.random.normal(rng_key(1), (2, 64, 64, 1))
    outputs, embedding = model.init_with_output({"params": rng_key(0)}, x, train=False)[
        0
    ]
    chex.assert_tree_all_finite((outputs, embedding))


@pytest.mark.parametrize("name", ("alexnet", "vgg11"))
def test_pool_size_one_one_feeds_fc1_the_mean_of_the_last_conv(name):
    model = models.make_model(name, HEADS, pool_size=(1, 1), **SMALL)
    x = jax.random.normal(rng_key(1), (2, 96, 64, 1))
    variables = model.init({"params": rng_key(0)}, x, train=False)
    (_, embedding), state = model.apply(
        variables, x, train=False, mutable=["intermediates"]
    )
    (last_conv,) = state["intermediates"]["trunk"]["last_conv"]
    fc1 = variables["params"]["trunk"]["classifier"]["fc1"]
    # fc1 reads one vector of the last conv's channels, after the last pool.
    assert fc1["kernel"].shape[0] == last_conv.shape[-1]
    window, stride = (3, 2) if name == "alexnet" else (2, 2)
    pooled = layers.max_pool(last_conv, window, stride).mean(axis=(1, 2))  # [B, C]
    fc2 = variables["params"]["trunk"]["classifier"]["fc2"]
    hidden = jax.nn.relu(pooled @ fc1["kernel"] + fc1["bias"])
    expected = jax.nn.relu(hidden @ fc2["kernel"] + fc2["bias"])
    np.testing.assert_allclose(embedding, expected, rtol=1e-5, atol=1e-6)
    # Unlike the torchvision grid, a longer input needs no other fc1.
    longer = jax.random.normal(rng_key(2), (2, 160, 64, 1))
    assert model.apply(variables, longer, train=False)[1].shape == embedding.shape


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"model\.name='resnet50': unknown"):
        models.make_model("resnet50", HEADS)


def test_registry():
    assert sorted(models.TRUNKS) == sorted(TRUNK_NAMES)
    assert models.VGG16().depth == 16
