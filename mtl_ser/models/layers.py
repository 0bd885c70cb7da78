"""Pooling layers and small helpers shared by the CNN trunks.

All functions take NHWC arrays `[B, H, W, C]` with H = time and W = mel, and
use only static shapes so they trace once per input shape under `jax.jit`.
"""

import functools
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

Pair = Union[int, Sequence[int]]

# torch's default Conv/Linear init, kaiming_uniform(a=sqrt(5)), is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1 / (3 * fan_in).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torchvision's VGG conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
he_fan_out_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torchvision's VGG Linear init: N(0, 0.01).
small_normal_init = nn.initializers.normal(stddev=0.01)


def scaled(channels: int, width: float) -> int:
    """Scales a layer size by the trunk's width multiplier.

    Args:
        channels: the layer size at width 1.
        width: the width multiplier.

    Returns:
        `round(channels * width)`, at least 1.
    """
    return max(1, round(channels * width))


def _pair(value: Pair) -> tuple[int, int]:
    """Returns `(value, value)` for an int, else the 2-sequence as a tuple."""
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _window_slices(x, axis: int, window: int, stride: int, out: int) -> list:
    """The `window` strided slices of `x` along `axis`: slice k holds element k
    of each of the `out` windows."""
    return [
        jax.lax.slice_in_dim(x, k, k + stride * (out - 1) + 1, stride=stride, axis=axis)
        for k in range(window)
    ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_axis(x: jax.Array, axis: int, window: int, stride: int) -> jax.Array:
    """1-D VALID max pooling along one axis.

    Args:
        x: input array.
        axis: the axis to pool.
        window: pooling window length.
        stride: pooling stride.

    Returns:
        `x` with `axis` reduced to `(n - window) // stride + 1`.
    """
    # The running maximum of the strided slices is the pool. Both obvious
    # alternatives are slower on XLA CPU: reduce_window's backward pass
    # (select_and_scatter), and, for non-overlapping windows, a reshape and
    # jnp.max, whose backward divides by a reduce_sum of the tie mask; XLA then
    # hands that reduce to YNNPACK together with the convolution that produces
    # the incoming gradient, and YNNPACK's convolutions are the slow ones here
    # (the VGG-11/2 train step was 1.12x slower at batch 64;
    # tests/training/test_xla_options.py checks that no convolution goes there).
    out = (x.shape[axis] - window) // stride + 1
    parts = _window_slices(x, axis, window, stride, out)
    result = parts[0]
    for part in parts[1:]:
        result = jnp.maximum(result, part)
    return result


def _max_pool_axis_fwd(x, axis, window, stride):
    result = _max_pool_axis(x, axis, window, stride)
    return result, (x, result)


def _max_pool_axis_bwd(axis, window, stride, residuals, g):
    """The input gradient: each window's gradient to its first maximum.

    Autodiff of the running maximum pads every slice's gradient back into
    the input with interior padding (a strided scatter), whose loop XLA CPU
    runs at about a third of this one's speed (benchmarks/max_pool.py). Here
    element k = stride * q + r of window i lands on input stride * (i + q) + r:
    for each r the contributions are summed at offsets q (edge padding only),
    and the `stride` sums are interleaved by a stack and a reshape.
    """
    x, result = residuals
    n, out = x.shape[axis], result.shape[axis]
    taken = None  # The windows whose maximum an earlier element already was.
    grads = []
    for part in _window_slices(x, axis, window, stride, out):
        first = part == result
        if taken is not None:
            first = first & ~taken
        taken = first if taken is None else taken | first
        grads.append(jnp.where(first, g, jnp.zeros_like(g)))
    shifts = (window - 1) // stride
    length = out + shifts  # Per residue r: input positions stride * t + r.
    residues = []
    for r in range(stride):
        total = jnp.zeros_like(g, shape=_with(result.shape, axis, length))
        for q in range(shifts + 1):
            if stride * q + r < window:
                pad = [(0, 0)] * x.ndim
                pad[axis] = (q, length - out - q)
                total = total + jnp.pad(grads[stride * q + r], pad)
        residues.append(total)
    grad = jnp.stack(residues, axis=axis + 1)
    grad = grad.reshape(_with(result.shape, axis, length * stride))
    if length * stride >= n:
        return (jax.lax.slice_in_dim(grad, 0, n, axis=axis),)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n - length * stride)
    return (jnp.pad(grad, pad),)


_max_pool_axis.defvjp(_max_pool_axis_fwd, _max_pool_axis_bwd)


def _with(shape, axis: int, size: int) -> tuple:
    return shape[:axis] + (size,) + shape[axis + 1 :]


def max_pool(x: jax.Array, window: Pair, stride: Pair) -> jax.Array:
    """2-D max pooling with VALID padding over H and W of an NHWC array.

    Same values as `flax.linen.max_pool(x, window, stride, "VALID")` and torch's
    `MaxPool2d(window, stride)` (no padding, floor mode). The max is separable,
    so H and W are pooled one after the other. Gradients match both too: each
    window's gradient goes to its first maximum in row-major order (the lowest
    H, then the lowest W), also when the window has ties.

    Args:
        x: input `[B, H, W, C]`.
        window: window size, an int or `(h, w)`.
        stride: stride, an int or `(h, w)`.

    Returns:
        `[B, (H - kh) // sh + 1, (W - kw) // sw + 1, C]`.

    Raises:
        ValueError: when H or W is smaller than the window.
    """
    kh, kw = _pair(window)
    sh, sw = _pair(stride)
    height, width = x.shape[1], x.shape[2]
    if height < kh or width < kw:
        raise ValueError(
            f"max_pool: spatial size {(height, width)} is smaller than the "
            f"window {(kh, kw)}; the input is too small for this network"
        )
    x = _max_pool_axis(x, 2, kw, sw)  # [B, H, W', C]
    return _max_pool_axis(x, 1, kh, sh)  # [B, H', W', C]


def _adaptive_avg_pool_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
    """1-D adaptive average pooling along one axis, torch's bin rule.

    Args:
        x: input array.
        axis: the axis to pool.
        size: output length along `axis`.

    Returns:
        `x` with `axis` resized to `size`.
    """
    n = x.shape[axis]
    if n % size == 0:
        # Equal, disjoint bins: a reshape and a mean.
        shape = x.shape[:axis] + (size, n // size) + x.shape[axis + 1 :]
        return jnp.mean(x.reshape(shape), axis=axis + 1)
    # Bin i covers [floor(i * n / size), ceil((i + 1) * n / size)); bins may
    # overlap, and repeat the same element when n < size.
    bins = []
    for i in range(size):
        start = (i * n) // size
        stop = -((-(i + 1) * n) // size)
        part = jax.lax.slice_in_dim(x, start, stop, axis=axis)
        bins.append(jnp.mean(part, axis=axis, keepdims=True))
    return jnp.concatenate(bins, axis=axis)


def adaptive_avg_pool(x: jax.Array, output_size: Pair) -> jax.Array:
    """torch's `AdaptiveAvgPool2d` over H and W of an NHWC array.

    The mean over a rectangular bin equals the mean over its rows of the mean
    over its columns, so the two axes are pooled one after the other.

    Args:
        x: input `[B, H, W, C]`, any H, W >= 1 (also smaller than the output).
        output_size: `(oh, ow)`, or an int for a square output.

    Returns:
        `[B, oh, ow, C]`.
    """
    out_h, out_w = _pair(output_size)
    x = _adaptive_avg_pool_axis(x, 1, out_h)  # [B, oh, W, C]
    return _adaptive_avg_pool_axis(x, 2, out_w)  # [B, oh, ow, C]


def time_deltas(x: jax.Array, order: int) -> jax.Array:
    """Appends time derivatives of the input as channels (HTK regression deltas).

    Each order is `d_t = sum_{n=1..2} n (c_{t+n} - c_{t-n}) / 10` of the one
    before, with the first and last frames repeated at the edges (HTK's
    delta and acceleration coefficients).

    Args:
        x: input `[B, T, F, C]` (T = time).
        order: 0 (returns `x`), 1 (deltas) or 2 (deltas and accelerations).

    Returns:
        `[B, T, F, C * (order + 1)]`: `x`, then each order's channels.
    """
    if order not in (0, 1, 2):
        raise ValueError(f"time_deltas: order must be 0, 1 or 2, got {order}")
    channels, prev = [x], x
    for _ in range(order):
        t = prev.shape[1]
        edges = [(0, 0)] * prev.ndim
        edges[1] = (2, 2)
        padded = jnp.pad(prev, edges, mode="edge")  # [B, T + 4, F, C]
        prev = (
            2.0 * (padded[:, 4 : 4 + t] - padded[:, :t])
            + (padded[:, 3 : 3 + t] - padded[:, 1 : 1 + t])
        ) / 10.0
        channels.append(prev)
    return jnp.concatenate(channels, axis=-1)


def check_input(x: jax.Array, min_size: int, trunk: str) -> None:
    """Raises a readable error for inputs a trunk cannot process.

    Args:
        x: trunk input, expected `[B, T, F, C]`.
        min_size: smallest T and F the trunk's pooling stages accept.
        trunk: trunk name for the message.

    Raises:
        ValueError: when `x` is not 4-D or T or F is below `min_size`.
    """
    if x.ndim != 4:
        raise ValueError(f"{trunk}: expected input [B, T, F, C], got {x.shape}")
    if x.shape[1] < min_size or x.shape[2] < min_size:
        raise ValueError(
            f"{trunk}: input [B, T, F, C] = {x.shape} is too small; T and F "
            f"must be at least {min_size}"
        )


class Classifier(nn.Module):
    """Hidden part of the torchvision classifier, giving the embedding.

    Flatten, Dropout, Dense, ReLU, Dropout, Dense, ReLU. The flatten order is
    H, W, C (NHWC), not torch's C, H, W; permute fc1's rows to port weights.

    Attributes:
        hidden: size of both Dense layers (already width-scaled).
        dropout: dropout rate before each Dense.
        dtype: computation dtype; parameters stay float32.
        kernel_init: Dense kernel initializer.
    """

    hidden: int
    dropout: float
    dtype: Any = jnp.float32
    kernel_init: Callable = torch_default_init

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Maps pooled features `[B, H, W, C]` to the embedding `[B, hidden]`."""
        x = x.reshape(x.shape[0], -1)  # [B, H * W * C]
        for i in (1, 2):
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.Dense(
                self.hidden,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=self.kernel_init,
                bias_init=nn.initializers.zeros,
                name=f"fc{i}",
            )(x)
            x = nn.relu(x)
        return x  # [B, hidden]


def conv_bn_relu(
    x: jax.Array,
    features: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int = 0,
    batch_norm: bool,
    train: bool,
    dtype: Any,
    kernel_init: Callable,
    index: int,
) -> jax.Array:
    """Conv, optional BatchNorm, ReLU, as submodules `conv{index}`, `bn{index}`.

    Call only from inside a `@nn.compact` method: the layers attach to that
    module. The conv keeps its bias even with BatchNorm, like torchvision.

    Args:
        x: input `[B, H, W, Cin]`.
        features: output channels.
        kernel: square kernel size.
        stride: square stride.
        padding: zero padding on each side of H and W (torch's `padding`).
        batch_norm: whether to add BatchNorm after the conv.
        train: batch statistics in train mode, running averages otherwise.
        dtype: computation dtype; parameters stay float32.
        kernel_init: conv kernel initializer.
        index: layer number used in the submodule names.

    Returns:
        `[B, H', W', features]`.
    """
    x = nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        bias_init=nn.initializers.zeros,
        name=f"conv{index}",
    )(x)
    if batch_norm:
        # torch's momentum 0.1 is flax's 0.9 (weight of the old average).
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=dtype,
            param_dtype=jnp.float32,
            name=f"bn{index}",
        )(x)
    return nn.relu(x)
