"""Tests for mtl_ser.models.layers: time deltas, adaptive average and max pooling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mtl_ser.models import layers
from tests.models.common import rng_key


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
    x = np.asarray(jax.random.normal(rng_key(0), (2, 9, 5, 1)))
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
