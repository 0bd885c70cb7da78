"""Tests for mtl_ser.models: pooling layers, trunks, heads and the registry."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mtl_ser import models
from mtl_ser.models import layers

TRUNK_NAMES = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19")
HEADS = (("emotion", 4), ("arousal", 1), ("gender", 2))
# Small enough for a fast CPU run, big enough to exercise every layer.
SMALL = dict(width=0.0625, hidden=256)  # hidden size round(256 / 16) = 16

# torchvision's VGG cfgs A, B, D, E, written out independently of vgg.py.
VGG_CONVS = {
    11: (64, 128, 256, 256, 512, 512, 512, 512),
    13: (64, 64, 128, 128, 256, 256, 512, 512, 512, 512),
    16: (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512),
    19: (64, 64, 128, 128, 256, 256, 256, 256, *(512,) * 8),
}
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


def _init_shapes(model, shape):
    """Variable shapes of `model.init` on `shape`, without computing anything."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, {"params": jax.random.key(0)}, x)


def _key(seed):
    """A PRNG key whose sampler compiles much faster on CPU than threefry."""
    return jax.random.key(seed, impl="rbg")


def _init(model, x):
    """Initialises `model` on `x`.

    Eagerly: the real runs below share one input shape and config, so the
    per-op compilations are cached across tests, which beats compiling a
    whole jitted graph per test on a small CPU.
    """
    return model.init({"params": _key(0)}, x, train=False)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _conv_count(variables):
    trunk = variables["params"]["trunk"]
    return sum(_count(v) for k, v in trunk.items() if k.startswith("conv"))


# torchvision's conv parameter counts (3 input channels), each also checked
# against the formula sum(k * k * cin * cout + cout) below.
CONV_COUNTS = {
    "alexnet": 2_469_696,
    "vgg11": 9_220_480,
    "vgg13": 9_404_992,
    "vgg16": 14_714_688,
    "vgg19": 20_024_384,
}
# torchvision's totals with the 1000-class classifier on 224x224x3 inputs.
TOTAL_COUNTS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
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
    variables = _init_shapes(model, (1, 224, 224, 3))
    assert _conv_count(variables) == CONV_COUNTS[name]
    assert _count(variables["params"]) == TOTAL_COUNTS[name]


@pytest.mark.parametrize("name", TRUNK_NAMES)
def test_param_counts_one_channel(name):
    # Only conv1 sees the input: k * k * 64 weights per input channel, so one
    # channel has 2 * k * k * 64 fewer parameters than three.
    kernel = 11 if name == "alexnet" else 3
    model = models.make_model(name, (("imagenet", 1000),))
    variables = _init_shapes(model, (1, 224, 224, 1))
    conv, total = _formula_counts(name, 1)
    assert conv == CONV_COUNTS[name] - 2 * kernel * kernel * 64
    assert _conv_count(variables) == conv
    assert _count(variables["params"]) == total


def test_param_counts_with_batch_norm():
    # BatchNorm adds a scale and a bias per conv channel (stats are not params).
    model = models.make_model("vgg11", (("imagenet", 1000),), batch_norm=True)
    variables = _init_shapes(model, (1, 224, 224, 3))
    channels = sum(VGG_CONVS[11])
    assert _count(variables["params"]) == TOTAL_COUNTS["vgg11"] + 2 * channels
    assert _count(variables["batch_stats"]) == 2 * channels


def test_width_scales_channels_and_hidden():
    model = models.make_model("alexnet", HEADS, width=0.5, hidden=100)
    params = _init_shapes(model, (1, 128, 64, 1))["params"]["trunk"]
    assert params["conv1"]["kernel"].shape == (11, 11, 1, 32)
    assert params["conv2"]["kernel"].shape == (5, 5, 32, 96)
    assert params["classifier"]["fc1"]["kernel"].shape == (6 * 6 * 128, 50)
    assert params["classifier"]["fc2"]["kernel"].shape == (50, 50)
    assert layers.scaled(64, 0.001) == 1


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
    variables = _init_shapes(model, shape)
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
    x = jax.random.normal(_key(1), (2, 64, 64, 1))
    outputs, embedding = model.init_with_output({"params": _key(0)}, x, train=False)[0]
    chex.assert_tree_all_finite((outputs, embedding))


def test_alexnet_minimum_input_size():
    model = models.make_model("alexnet", HEADS, **SMALL)
    _init_shapes(model, (1, 63, 63, 1))
    with pytest.raises(ValueError, match="at least 63"):
        _init_shapes(model, (1, 64, 62, 1))
    with pytest.raises(ValueError, match="at least 63"):
        _init_shapes(model, (2, 64, 40, 1))
    with pytest.raises(ValueError, match="at least 32"):
        _init_shapes(models.make_model("vgg11", HEADS, **SMALL), (1, 31, 64, 1))


def _htk_deltas(c):
    """HTK's regression deltas over +-2 frames along axis 1, frames repeated
    at the edges, written as the textbook sum."""
    t = c.shape[1]
    out = np.zeros_like(c)
    for i in range(t):
        for n in (1, 2):
            ahead, behind = c[:, min(i + n, t - 1)], c[:, max(i - n, 0)]
            out[:, i] += n * (ahead - behind) / 10.0
    return out


def test_time_deltas_are_htk_regression_deltas_as_channels():
    x = np.asarray(jax.random.normal(_key(0), (2, 9, 5, 1)))
    got = np.asarray(layers.time_deltas(jnp.asarray(x), 2))
    assert got.shape == (2, 9, 5, 3)
    np.testing.assert_array_equal(got[..., :1], x)
    deltas = _htk_deltas(x)
    np.testing.assert_allclose(got[..., 1:2], deltas, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[..., 2:], _htk_deltas(deltas), rtol=1e-5, atol=1e-6)
    # A ramp of slope 3 has delta 3 away from the edges, acceleration 0 there.
    ramp = jnp.broadcast_to(3.0 * jnp.arange(12.0)[None, :, None, None], (1, 12, 2, 1))
    ramp_out = layers.time_deltas(ramp, 2)
    np.testing.assert_allclose(ramp_out[0, 2:-2, :, 1], 3.0, rtol=1e-6)
    np.testing.assert_allclose(ramp_out[0, 4:-4, :, 2], 0.0, atol=1e-6)
    np.testing.assert_array_equal(layers.time_deltas(ramp, 0), ramp)
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        layers.time_deltas(ramp, 3)


@pytest.mark.parametrize("name", ("alexnet", "vgg11"))
def test_deltas_feed_the_trunk_as_extra_input_channels(name):
    model = models.make_model(name, HEADS, deltas=2, **SMALL)
    x = jax.random.normal(_key(1), (2, 64, 64, 1))
    variables = model.init({"params": _key(0)}, x, train=False)
    conv1 = variables["params"]["trunk"]["conv1"]["kernel"]
    assert conv1.shape[2] == 3
    # The delta channels' weights matter: zeroing them changes the outputs.
    outputs, _ = model.apply(variables, x, train=False)
    zeroed = jax.tree_util.tree_map(lambda v: v, variables)
    zeroed["params"]["trunk"]["conv1"]["kernel"] = conv1.at[:, :, 1:].set(0.0)
    outputs_zeroed, _ = model.apply(zeroed, x, train=False)
    assert not np.allclose(outputs["emotion"], outputs_zeroed["emotion"])
    # With them zeroed, the model is the plain one with the same weights.
    plain = models.make_model(name, HEADS, **SMALL)
    plain_vars = jax.tree_util.tree_map(lambda v: v, zeroed)
    plain_vars["params"]["trunk"]["conv1"]["kernel"] = conv1[:, :, :1]
    outputs_plain, _ = plain.apply(plain_vars, x, train=False)
    np.testing.assert_allclose(
        outputs_plain["emotion"], outputs_zeroed["emotion"], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", ("alexnet", "vgg11"))
def test_pool_size_one_one_feeds_fc1_the_mean_of_the_last_conv(name):
    model = models.make_model(name, HEADS, pool_size=(1, 1), **SMALL)
    x = jax.random.normal(_key(1), (2, 96, 64, 1))
    variables = model.init({"params": _key(0)}, x, train=False)
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
    longer = jax.random.normal(_key(2), (2, 160, 64, 1))
    assert model.apply(variables, longer, train=False)[1].shape == embedding.shape


def test_pool_size_time_by_mel_sets_fc1_inputs():
    default = models.make_model("vgg11", HEADS, **SMALL)
    by_mel = models.make_model("vgg11", HEADS, pool_size=(1, 2), **SMALL)
    x = jnp.zeros((1, 64, 64, 1))
    channels = layers.scaled(512, SMALL["width"])
    for model, bins in ((default, 7 * 7), (by_mel, 2)):
        params = model.init({"params": _key(0)}, x, train=False)["params"]
        fc1 = params["trunk"]["classifier"]["fc1"]["kernel"]
        assert fc1.shape[0] == bins * channels


def _torch_adaptive_avg_pool(x, out_h, out_w):
    """Direct numpy transcription of torch's AdaptiveAvgPool2d on NHWC."""
    _, height, width, _ = x.shape
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), x.dtype)
    for i in range(out_h):
        h0, h1 = (
            int(np.floor(i * height / out_h)),
            int(np.ceil((i + 1) * height / out_h)),
        )
        for j in range(out_w):
            w0 = int(np.floor(j * width / out_w))
            w1 = int(np.ceil((j + 1) * width / out_w))
            out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [
        ((12, 12), (6, 6)),  # divisible: reshape fast path
        ((6, 7), (6, 7)),  # identity
        ((13, 10), (6, 7)),  # not divisible: overlapping bins
        ((1, 1), (6, 6)),  # smaller than output: one value repeated
        ((3, 2), (6, 7)),  # smaller than output: bins repeat
        ((5, 9), (7, 4)),  # mixed
        ((14, 3), (7, 7)),  # divisible on one axis only
    ],
)
def test_adaptive_avg_pool_matches_torch_formula(in_hw, out_hw):
    x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
    got = layers.adaptive_avg_pool(jnp.asarray(x), out_hw)
    chex.assert_shape(got, (2, *out_hw, 3))
    want = _torch_adaptive_avg_pool(x, *out_hw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape,window,stride",
    [
        ((2, 15, 9, 3), 3, 2),
        ((2, 16, 10, 3), 3, 2),
        ((2, 3, 3, 2), 3, 2),
        ((2, 9, 11, 3), 2, 2),
        ((2, 8, 7, 3), 2, 2),
        ((1, 12, 10, 2), (3, 2), (1, 2)),
    ],
)
def test_max_pool_matches_flax(shape, window, stride):
    # A permutation has no ties, so the gradient's target is unique.
    size = int(np.prod(shape))
    x = jax.random.permutation(jax.random.key(0), size).reshape(shape) / size
    window2 = layers._pair(window)
    stride2 = layers._pair(stride)

    def fast(x):
        return layers.max_pool(x, window, stride)

    def ref(x):
        return nn.max_pool(x, window2, stride2, "VALID")

    np.testing.assert_array_equal(fast(x), ref(x))
    cot = jax.random.normal(jax.random.key(1), ref(x).shape)
    grad_fast = jax.jit(jax.grad(lambda x: jnp.sum(fast(x) * cot)))(x)
    grad_ref = jax.jit(jax.grad(lambda x: jnp.sum(ref(x) * cot)))(x)
    np.testing.assert_allclose(grad_fast, grad_ref, rtol=1e-6)


@pytest.mark.parametrize(
    "window, stride", [(3, 2), (2, 2), ((3, 2), (1, 2)), (2, 3), ((2, 3), (3, 1))]
)
def test_max_pool_gradient_goes_to_the_first_maximum_as_torch(window, stride):
    # Few distinct values, so most windows have ties (as after a ReLU).
    x = jax.random.randint(jax.random.key(0), (2, 11, 9, 3), 0, 3).astype(jnp.float32)
    cot = jax.random.normal(jax.random.key(1), layers.max_pool(x, window, stride).shape)
    grad = jax.grad(lambda x: jnp.sum(layers.max_pool(x, window, stride) * cot))(x)
    # torch's MaxPool2d: per window, the first strict maximum in row-major order.
    (kh, kw), (sh, sw) = layers._pair(window), layers._pair(stride)
    xs, cs, want = np.asarray(x), np.asarray(cot), np.zeros(x.shape, np.float32)
    for b, i, j, c in np.ndindex(cs.shape):
        patch = xs[b, i * sh : i * sh + kh, j * sw : j * sw + kw, c]
        di, dj = np.unravel_index(np.argmax(patch), patch.shape)  # First maximum.
        want[b, i * sh + di, j * sw + dj, c] += cs[b, i, j, c]
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-6)
    # Flax's reduce_window gradient (select_and_scatter) picks the same element.
    flax_grad = jax.grad(
        lambda x: jnp.sum(nn.max_pool(x, (kh, kw), (sh, sw), "VALID") * cot)
    )(x)
    np.testing.assert_allclose(grad, flax_grad, rtol=1e-6, atol=1e-6)


def test_max_pool_too_small_input():
    with pytest.raises(ValueError, match="smaller than the window"):
        layers.max_pool(jnp.zeros((1, 2, 5, 1)), 3, 2)


@pytest.fixture(scope="module")
def alexnet_bn():
    """A small AlexNet with BatchNorm, its variables and an input batch."""
    model = models.make_model("alexnet", HEADS, batch_norm=True, **SMALL)
    x = jax.random.normal(_key(1), (2, 64, 64, 1))
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

    first = train_embedding(variables, _key(2))
    second = train_embedding(variables, _key(3))
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
        rngs={"dropout": _key(2)},
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
    x = jax.random.normal(_key(1), (2, 64, 64, 1))
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


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"model\.name='resnet50': unknown"):
        models.make_model("resnet50", HEADS)


def test_unknown_vgg_depth():
    with pytest.raises(ValueError, match="depth=12"):
        _init_shapes(models.MultiTaskModel(models.VGG(depth=12), HEADS), (1, 64, 64, 1))


@pytest.mark.parametrize(
    "head_sizes,message",
    [
        ((), "at least one"),
        ((("a", 2), ("a", 3)), "duplicate"),
        ((("a", 0),), "output size 0"),
    ],
)
def test_bad_head_sizes(head_sizes, message):
    model = models.make_model("vgg11", head_sizes, **SMALL)
    with pytest.raises(ValueError, match=message):
        _init_shapes(model, (1, 64, 64, 1))


def test_registry():
    assert sorted(models.TRUNKS) == sorted(TRUNK_NAMES)
    assert models.VGG16().depth == 16
