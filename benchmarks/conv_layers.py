"""Each conv layer's forward + backward time: XLA's library choices vs PyTorch.

  .venv/bin/python -m benchmarks.conv_layers --model=alexnet --batch_size=64

For every conv layer of AlexNet (width 1) or VGG-11 (width 0.5) at input
[B, 128, 64, 1]: the jitted forward and backward (input and weight gradients;
the first layer's input needs none) with XLA CPU's convolutions in YNNPACK
(XLA's default) and in XLA's own Eigen path (`train.cpu_library_fusions`
without `conv`), and PyTorch's conv2d forward + autograd on channels_last
tensors. Median of `--repeats` runs after one warm-up, each variant compiled
once. This is the measurement behind the default of train.cpu_library_fusions.
"""

import statistics
import time

import jax
import numpy as np
from absl import app, flags
from jax import lax

from mtl_ser.training import xla_options

_MODEL = flags.DEFINE_enum("model", "alexnet", ["alexnet", "vgg11_half"], "Model.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per variant.")

# (H, W, Cin, Cout, kernel, stride, padding) of each conv at input 128 x 64.
LAYERS = {
    "alexnet": [
        (128, 64, 1, 64, 11, 4, 2),
        (15, 7, 64, 192, 5, 1, 2),
        (7, 3, 192, 384, 3, 1, 1),
        (7, 3, 384, 256, 3, 1, 1),
        (7, 3, 256, 256, 3, 1, 1),
    ],
    "vgg11_half": [
        (128, 64, 1, 32, 3, 1, 1),
        (64, 32, 32, 64, 3, 1, 1),
        (32, 16, 64, 128, 3, 1, 1),
        (32, 16, 128, 128, 3, 1, 1),
        (16, 8, 128, 256, 3, 1, 1),
        (16, 8, 256, 256, 3, 1, 1),
        (8, 4, 256, 256, 3, 1, 1),
        (8, 4, 256, 256, 3, 1, 1),
    ],
}
VARIANTS = {"ynnpack convs (XLA default)": "xla", "XLA/Eigen convs": "dot,reduce"}


def _conv(x, kernel, stride, pad):
    return lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _train_fn(stride, pad, need_dx):
    def grads(x, kernel, dy):
        _, vjp = jax.vjp(lambda a, b: _conv(a, b, stride, pad), x, kernel)
        dx, dk = vjp(dy)
        return (dx, dk) if need_dx else dk

    return grads


def _median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _torch_ms(torch, x, kernel, dy, stride, pad, need_dx, repeats):
    def nchw(a, grad=False):
        t = torch.tensor(np.asarray(a)).permute(0, 3, 1, 2)
        return t.contiguous(memory_format=torch.channels_last).requires_grad_(grad)

    tx, tdy = nchw(x, need_dx), nchw(dy)
    tk = torch.tensor(np.asarray(kernel)).permute(3, 2, 0, 1)
    tk = tk.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    inputs = [tx, tk] if need_dx else [tk]

    def step():
        out = torch.nn.functional.conv2d(tx, tk, stride=stride, padding=pad)
        return torch.autograd.grad(out, inputs, tdy)

    return _median_ms(step, repeats)


def main(argv):
    del argv
    try:
        import torch  # noqa: PLC0415 (optional: the `bench` extra)
    except ImportError:
        torch = None
    batch, repeats = _BATCH.value, _REPEATS.value
    print(
        f"{_MODEL.value}, batch {batch}, float32, backend {jax.default_backend()}; "
        f"forward + backward ms, median of {repeats}"
        + ("" if torch is None else f"; torch {torch.__version__}, channels_last")
    )
    names = list(VARIANTS) + ([] if torch is None else ["PyTorch"])
    print("| layer | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    rng = np.random.default_rng(0)
    totals = np.zeros(len(names))
    for index, (h, w, cin, cout, k, stride, pad) in enumerate(LAYERS[_MODEL.value]):
        need_dx = index > 0
        x = rng.normal(size=(batch, h, w, cin)).astype(np.float32)
        kernel = (0.05 * rng.normal(size=(k, k, cin, cout))).astype(np.float32)
        dy = rng.normal(size=_conv(x, kernel, stride, pad).shape).astype(np.float32)
        lowered = jax.jit(_train_fn(stride, pad, need_dx)).lower(x, kernel, dy)
        row = []
        for fusions in VARIANTS.values():
            options = xla_options.compiler_options_for(fusions)
            compiled = lowered.compile(compiler_options=options)
            args = (x, kernel, dy)
            row.append(
                _median_ms(
                    lambda c=compiled, a=args: jax.block_until_ready(c(*a)), repeats
                )
            )
        if torch is not None:
            row.append(_torch_ms(torch, x, kernel, dy, stride, pad, need_dx, repeats))
        totals += row
        label = f"{h}x{w} {cin}->{cout} k{k} s{stride}"
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in row) + " |", flush=True)
    print("| **total** | " + " | ".join(f"**{v:.1f}**" for v in totals) + " |")


if __name__ == "__main__":
    app.run(main)
