"""Model FLOPs of a train step and the peak rates that MFU divides them by.

MFU (model FLOPs utilisation) = model FLOPs per step / step time / peak rate.

Model FLOPs are counted from the step's jaxpr (`matmul_flops`): the
convolutions and dots, 2 FLOPs per multiply-add, from their shapes alone, in
torch's convention (every kernel tap of every output position, padding taps
included). That is the model's nominal work whatever the compiler makes of it:
the convention of paper-style MFU, which counts a model's matmul FLOPs from its
shapes rather than what the hardware executed, and of torch's FlopCounterMode,
so our MFU and a PyTorch user's have the same numerator (`torch_reference`
checks that the two counts are equal). Elementwise work (bias, ReLU, pooling,
BatchNorm, the losses, Adam) is left out, as both conventions leave it out.
The count is the jaxpr's, so a forward recomputed by jax.checkpoint would count
twice (hardware FLOPs, not model FLOPs); our trunks recompute nothing.
XLA's own cost analysis is no substitute: on GPU it leaves out the cuDNN
convolutions, which XLA calls as custom calls, and read 0.02-0.08 "of peak" on
an H200.

Peak rates (`CHIP_PEAKS`) are the vendors' datasheet dense figures per device,
without 2:4 sparsity (datasheets quote sparse figures, twice these, with an
asterisk), in FLOP/s, per compute dtype (the config's `model.dtype`):
  - NVIDIA H100 SXM, H200 and GH200: bfloat16 989 TFLOP/s, TF32 494.5;
    H100 PCIe: 756 and 378; H100 NVL and H200 NVL: 835.5 and 417.5;
    A100 (SXM4 and PCIe, 40 and 80 GB): 312 and 156; L4: 121 and 60.
  - Google Cloud TPU system architecture pages, per chip, which is one JAX
    device on these generations: v4 275 TFLOP/s bfloat16, v5e 197, v5p 459,
    v6e 918.
The float32 row is the rate float32 convolutions and dots run at by default.
On NVIDIA GPUs JAX's default matmul precision lets XLA and cuDNN compute them
in TF32 (Ampere and later), so its peak is TF32's. On TPU the default precision
computes float32 matmuls in one bfloat16 pass, so its peak is bfloat16's. Under
jax_default_matmul_precision="highest" the true ceiling is far lower (67 TFLOP/s
of FP32 on an H100 SXM) and the MFU reads low.

Other chips (and CPUs), and other dtypes, get the matmul rate measured now instead
(`benchmarks.common.matmul_peak_gflops`): a fraction of that is a fraction of
what this machine achieves, not of its datasheet.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from mtl_ser import tasks as tasks_lib
from mtl_ser.training import build, sharding


def _tflops(bfloat16: float, float32: float) -> dict:
    """{dtype: FLOP/s} from datasheet TFLOP/s."""
    return {"bfloat16": bfloat16 * 1e12, "float32": float32 * 1e12}


# (device_kind pattern, {dtype: dense FLOP/s of one device}). The first pattern
# found in the device kind as whole words wins ("L4" is not "L40S", "H200" not
# "GH200"), so each variant precedes its family's name. The TPU patterns end
# the kind: JAX calls v5p "TPU v5" and v5e "TPU v5 lite".
CHIP_PEAKS = (
    ("H100 PCIe", _tflops(756, 378)),
    ("H100 NVL", _tflops(835.5, 417.5)),
    ("H100", _tflops(989, 494.5)),  # SXM: "NVIDIA H100 80GB HBM3".
    ("H200 NVL", _tflops(835.5, 417.5)),
    ("H200", _tflops(989, 494.5)),
    ("GH200", _tflops(989, 494.5)),
    ("A100", _tflops(312, 156)),
    ("L4", _tflops(121, 60)),
    # On TPU float32 matmuls run as bfloat16 passes by default: bf16's peak.
    ("TPU v4$", _tflops(275, 275)),
    ("TPU v5 lite$|TPU v5e$", _tflops(197, 197)),
    ("TPU v5$|TPU v5p$", _tflops(459, 459)),
    ("TPU v6 lite$|TPU v6e$", _tflops(918, 918)),
)


# ---------------------------------------------------------------- counting


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):  # ClosedJaxpr
                yield item.jaxpr
            elif hasattr(item, "eqns"):  # Jaxpr
                yield item


def _valid_taps(n, lhs_dilation, pad_lo, k, rhs_dilation, stride, m) -> int:
    """(output position, kernel tap) pairs along one axis that read a real input.

    Taps on padding or on the holes of a dilated input do not count.
    """
    length = (n - 1) * lhs_dilation + 1
    count = 0
    for o in range(m):
        for t in range(k):
            pos = o * stride + t * rhs_dilation - pad_lo
            count += 0 <= pos < length and pos % lhs_dilation == 0
    return count


def _conv_flops(eqn, convention: str) -> int:
    """FLOPs of one conv_general_dilated, 2 per multiply-add.

    "torch": every kernel tap of every output position (of every input
    position for a transposed conv, i.e. one with lhs dilation), padding
    included, as torch's FlopCounterMode counts. "xla": only taps that read a
    real input element, as XLA's HloCostAnalysis counts.
    """
    lhs, rhs, out = (v.aval for v in (*eqn.invars[:2], eqn.outvars[0]))
    p = eqn.params
    dn = p["dimension_numbers"]  # specs: (batch or O, feature or I, spatial...)
    window = 1
    for i, (dl, dr, do) in enumerate(
        zip(dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:], strict=True)
    ):
        n, k, m = lhs.shape[dl], rhs.shape[dr], out.shape[do]
        if convention == "xla":
            window *= _valid_taps(
                n,
                p["lhs_dilation"][i],
                p["padding"][i][0],
                k,
                p["rhs_dilation"][i],
                p["window_strides"][i],
                m,
            )
        else:
            window *= (n if p["lhs_dilation"][i] > 1 else m) * k
    batch_and_features = out.shape[dn.out_spec[0]] * out.shape[dn.out_spec[1]]
    return 2 * batch_and_features * window * rhs.shape[dn.rhs_spec[1]]


def matmul_flops(jaxpr, convention: str = "torch") -> int:
    """Convolution and dot FLOPs of a jaxpr, 2 per multiply-add.

    Recurses into nested jaxprs (jit, custom_jvp/vjp). See `_conv_flops` for
    the two conventions; dots count the same in both. The "torch" convention
    matches FlopCounterMode exactly for forward and weight-gradient convs and
    for input-gradient convs of strided or size-preserving ("same") convs, all
    that our trunks have. For a stride-1 conv whose output is smaller than its
    input, torch sizes the input gradient's count by that output, this by the
    input, so the two would differ.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_flops(eqn, convention)
        elif name == "dot_general":
            lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
            (contract, _), _ = eqn.params["dimension_numbers"]
            depth = math.prod(lhs.shape[d] for d in contract)
            total += 2 * math.prod(out.shape) * depth
        for sub in _subjaxprs(eqn):
            total += matmul_flops(sub, convention)
    return total


def step_flops(jitted_fn, *args) -> int:
    """Model FLOPs of one call of a jitted function: its jaxpr, torch's convention.

    Tracing only: nothing is compiled or run.
    """
    return matmul_flops(jitted_fn.trace(*args).jaxpr, "torch")


def train_step_flops(config, batch_size: int) -> int:
    """Model FLOPs of one train step of `config` at the global `batch_size`.

    The step `benchmarks.common.measure` times, on the same kind of random
    batch. With data.features_on_device the count includes the log-mels' mel
    filterbank matmul, which that step computes.
    """
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    mesh = sharding.make_mesh()
    steps = build.build_steps(c, tasks, mesh)
    rng = np.random.default_rng(0)
    mels = c.features.n_mels
    batch = common._random_batch(tasks, batch_size, c.data.crop_frames, mels, rng)
    if c.data.features_on_device:
        batch = common._audio_batch(batch, c, rng)
    batch = sharding.from_process_local(batch, mesh)
    return step_flops(steps.train_fn, steps.state, batch, None)


# ---------------------------------------------------------------- peaks


def chip_peak(device_kind: str, dtype="float32") -> "float | None":
    """Datasheet dense FLOP/s of one device of `device_kind` in `dtype`.

    Args:
        device_kind: a `jax.Device.device_kind`, e.g. "NVIDIA H200".
        dtype: the compute dtype, a name or a dtype.

    Returns:
        The figure of the first `CHIP_PEAKS` pattern found in `device_kind`,
        or None for a chip (or dtype) the table does not hold.
    """
    name = jnp.dtype(dtype).name
    for pattern, peaks in CHIP_PEAKS:
        if re.search(rf"(?<!\w)(?:{pattern})(?!\w)", device_kind):
            return peaks.get(name)
    return None


def peak_flops(dtype="float32", devices=None) -> tuple:
    """The peak FLOP/s of `devices` together in `dtype`, and where it came from.

    Args:
        dtype: the compute dtype (`model.dtype`).
        devices: the devices the step runs on; default `jax.devices()`, which is
            `benchmarks.common.measure`'s mesh.

    Returns:
        (FLOP/s, source): the datasheet figure times the device count for a
        chip in `CHIP_PEAKS`, with the chip's name; else the `dtype` matmul
        rate measured now on the default device ("measured matmul rate"),
        times the device count off the CPU. CPU devices share the host's cores,
        so there the measured rate already is all of them.
    """
    devices = jax.devices() if devices is None else devices
    kind, count = devices[0].device_kind, len(devices)
    name = jnp.dtype(dtype).name
    per_device = chip_peak(kind, name)
    if per_device is not None:
        return per_device * count, (
            f"{kind} datasheet, {per_device / 1e12:g} TFLOP/s {name} dense "
            f"x {count} device(s)"
        )
    measured = common.matmul_peak_gflops(dtype=name) * 1e9
    count = 1 if devices[0].platform == "cpu" else count
    return measured * count, (
        f"measured matmul rate, {measured / 1e9:.0f} GFLOP/s {name} x {count} device(s)"
    )
