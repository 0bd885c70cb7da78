"""benchmarks/flops.py: FLOPs counted by hand from shapes, and the peak table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from benchmarks import common, flops
from configs import synthetic
from mtl_ser import models
from mtl_ser import tasks as tasks_lib
from mtl_ser.models import alexnet, layers

B, T, F, C_IN, C_OUT, CLASSES = 2, 8, 6, 3, 4, 5


class _ConvDense(nn.Module):
    """3x3 "same" conv, stride 1, then a Dense on the flattened map."""

    @nn.compact
    def __call__(self, x):  # [B, T, F, C_IN]
        x = nn.Conv(C_OUT, (3, 3), padding="SAME")(x)  # [B, T, F, C_OUT]
        return nn.Dense(CLASSES)(x.reshape(len(x), -1))  # [B, CLASSES]


def _conv_dense():
    model = _ConvDense()
    x = jnp.ones((B, T, F, C_IN))
    return model, model.init(jax.random.key(0), x), x


# One multiply-add is 2 FLOPs. The conv: every output [B, T, F, C_OUT] sums a
# 3 x 3 x C_IN window; the Dense: every output [B, CLASSES] a T * F * C_OUT row.
CONV = 2 * (B * T * F * C_OUT) * (3 * 3 * C_IN)
DENSE = 2 * (B * CLASSES) * (T * F * C_OUT)
# Without the taps on the "same" padding: along T, 8 positions x 3 taps less
# the two that fall off the ends (22); along F, 6 x 3 - 2 = 16.
CONV_VALID = 2 * (B * C_OUT) * (22 * 16) * C_IN


def _jaxpr(fn, *args):
    return jax.make_jaxpr(fn)(*args)


def test_forward_counts_conv_and_dense_by_hand():
    model, variables, x = _conv_dense()
    jaxpr = _jaxpr(model.apply, variables, x)
    assert flops.matmul_flops(jaxpr, "torch") == CONV + DENSE
    assert flops.matmul_flops(jaxpr, "xla") == CONV_VALID + DENSE


def test_parameter_gradient_adds_weight_and_input_gradients():
    model, variables, x = _conv_dense()

    def loss(v):
        return jnp.sum(model.apply(v, x) ** 2)

    jaxpr = _jaxpr(jax.grad(loss), variables)
    # Forward (conv, Dense), the Dense's kernel and input gradients (each a
    # Dense's work), the conv's kernel gradient (a conv's work, taps as
    # forward). x is not differentiated: no conv input gradient.
    assert flops.matmul_flops(jaxpr, "torch") == 2 * CONV + 3 * DENSE
    assert flops.matmul_flops(jaxpr, "xla") == 2 * CONV_VALID + 3 * DENSE
    # With x differentiated too, one more conv's work.
    grad_both = jax.grad(lambda v, x: jnp.sum(model.apply(v, x) ** 2), (0, 1))
    jaxpr = _jaxpr(grad_both, variables, x)
    assert flops.matmul_flops(jaxpr, "torch") == 3 * CONV + 3 * DENSE


def _strided_conv(x, kernel):  # [1, 7, 7, 2] -> [1, 4, 4, 3]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(2, 2),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def test_strided_padded_conv_and_its_input_gradient_by_convention():
    x, kernel = jnp.ones((1, 7, 7, 2)), jnp.ones((3, 3, 2, 3))
    assert _strided_conv(x, kernel).shape == (1, 4, 4, 3)
    # torch: 4 outputs x 3 taps per axis. xla: output o reads input 2o - 1 + t,
    # t = 0, 1, 2: o = 0 loses -1, o = 3 loses 7; 2 + 3 + 3 + 2 = 10 per axis.
    torch_count = 2 * 3 * (4 * 3) * (4 * 3) * 2
    valid_count = 2 * 3 * 10 * 10 * 2
    forward = _jaxpr(_strided_conv, x, kernel)
    assert flops.matmul_flops(forward, "torch") == torch_count == 1728
    assert flops.matmul_flops(forward, "xla") == valid_count == 1200
    # The input gradient is a transposed conv (lhs dilation 2) doing the same
    # multiply-adds: torch counts it per input position x taps, xla the taps
    # that land on real (not inserted) elements; both equal the forward's.
    grad_x = _jaxpr(jax.grad(lambda x: jnp.sum(_strided_conv(x, kernel))), x)
    convs = [e for e in grad_x.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert [c.params["lhs_dilation"] for c in convs] == [(1, 1), (2, 2)]
    assert flops.matmul_flops(grad_x, "torch") == 2 * torch_count
    assert flops.matmul_flops(grad_x, "xla") == 2 * valid_count


def test_nested_jit_remat_and_batched_dot_are_counted():
    @jax.jit
    def bmm(a, b):  # [4, 3, 5] @ [4, 5, 6]: 4 x 3 x 6 outputs of depth 5.
        return jnp.einsum("bij,bjk->bik", a, b)

    @jax.jit
    def outer(a, b):
        once = bmm(a, b)
        return once + jax.checkpoint(bmm)(a, b)

    a, b = jnp.ones((4, 3, 5)), jnp.ones((4, 5, 6))
    per_call = 2 * (4 * 3 * 6) * 5
    jaxpr = _jaxpr(outer, a, b)
    assert flops.matmul_flops(jaxpr) == 2 * per_call
    assert flops.step_flops(outer, a, b) == 2 * per_call


def test_train_step_flops_are_the_models_forward_and_backward():
    """The step benchmarks.common.measure times: forward, then the kernel and
    input gradients of every layer (each as much work as its forward) bar the
    first conv's input gradient, as x is not differentiated."""
    config = synthetic.get_config("smoke")  # AlexNet width 1/16, [B, 64, 64, 1]
    config.weighting.name = "equal"  # Loss-based: one backward pass.
    batch_size, frames, mels = 4, config.data.crop_frames, config.features.n_mels
    tasks = tasks_lib.make_tasks(
        config.tasks, config.emotion_classes, config.regression_loss
    )
    m = config.model
    model = models.make_model(
        m.name,
        tuple((t.name, t.output_size) for t in tasks),
        width=m.width,
        hidden=m.hidden,
        batch_norm=m.batch_norm,
        deltas=m.deltas,
        pool_size=m.pool_size,
    )
    x = jax.ShapeDtypeStruct((batch_size, frames, mels, 1), jnp.float32)
    forward = functools.partial(model.apply, train=False)
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), x
    )
    forward_flops = flops.matmul_flops(jax.make_jaxpr(forward)(variables, x))
    channels, kernel, stride, pad, _ = alexnet._CONVS[0]
    t_out = (frames + 2 * pad - kernel) // stride + 1
    f_out = (mels + 2 * pad - kernel) // stride + 1
    conv1 = 2 * batch_size * t_out * f_out * layers.scaled(channels, m.width)
    conv1 *= kernel * kernel * 1  # One input channel (model.deltas = 0).
    assert m.deltas == 0 and conv1 < forward_flops
    step = flops.train_step_flops(config, batch_size)
    assert step == 3 * forward_flops - conv1


@pytest.mark.parametrize(
    "kind, dtype, tflops",
    [
        ("NVIDIA H200", "bfloat16", 989),
        ("NVIDIA H200", "float32", 494.5),  # TF32
        ("NVIDIA H200 NVL", "bfloat16", 835.5),
        ("NVIDIA GH200 480GB", "float32", 494.5),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989),
        ("NVIDIA H100 PCIe", "bfloat16", 756),
        ("NVIDIA H100 PCIe", "float32", 378),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312),
        ("NVIDIA A100-PCIE-40GB", "float32", 156),
        ("NVIDIA L4", "bfloat16", 121),
        ("NVIDIA L4", jnp.float32, 60),
        ("TPU v4", "bfloat16", 275),
        ("TPU v4", "float32", 275),  # float32 matmuls as bfloat16 passes
        ("TPU v5 lite", "bfloat16", 197),
        ("TPU v5e", "float32", 197),
        ("TPU v5", "bfloat16", 459),
        ("TPU v5p", "bfloat16", 459),
        ("TPU v6 lite", "bfloat16", 918),
    ],
)
def test_chip_peak_reads_the_datasheet_row(kind, dtype, tflops):
    assert flops.chip_peak(kind, dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize(
    "kind", ["NVIDIA L40S", "NVIDIA A10G", "Tesla V100-SXM2-16GB", "TPU v4 lite", "cpu"]
)
def test_chip_peak_does_not_guess_other_chips(kind):
    assert flops.chip_peak(kind, "bfloat16") is None


class _Device:
    def __init__(self, kind, platform):
        self.device_kind, self.platform = kind, platform


def test_peak_flops_multiplies_a_known_chip_by_the_device_count(monkeypatch):
    monkeypatch.setattr(common, "matmul_peak_gflops", _no_matmul)
    devices = [_Device("NVIDIA H200", "gpu")] * 2
    peak, source = flops.peak_flops("bfloat16", devices)
    assert peak == pytest.approx(2 * 989e12)
    assert "NVIDIA H200" in source and "989 TFLOP/s bfloat16" in source


def _no_matmul(**kwargs):
    raise AssertionError("a known chip's peak was measured")


@pytest.mark.parametrize("platform, count, expected", [("cpu", 4, 1), ("gpu", 2, 2)])
def test_peak_flops_of_an_unknown_chip_is_the_measured_rate(
    monkeypatch, platform, count, expected
):
    asked = []

    def measured(dtype):
        asked.append(dtype)
        return 250.0  # GFLOP/s

    monkeypatch.setattr(common, "matmul_peak_gflops", measured)
    devices = [_Device("Some Accelerator 9000", platform)] * count
    peak, source = flops.peak_flops(np.dtype("float32"), devices)
    # CPU devices share the host's cores: the rate is counted once.
    assert peak == pytest.approx(expected * 250e9)
    assert asked == ["float32"]
    assert source.startswith("measured matmul rate")
