"""Max pooling's forward + backward: autodiff of the running maximum vs ours.

  .venv/bin/python -m benchmarks.max_pool --batch_size=64
  python -m benchmarks.max_pool --models=vgg16 --batch_size=256 --dtype=bfloat16

For every max pool of AlexNet (width 1; 3x3, stride 2) and VGG-11 (width 0.5;
2x2, stride 2) at input [B, 128, 64, 1], or of VGG-16 (width 1) at issue 5's
input [B, 256, 128, 1]: the jitted gradient of sum(max_pool(relu(x)) * w) with
respect to x, as in the train step (ReLU, pool, and the pool's input
gradient). "autodiff" differentiates the running maximum of strided slices
(`layers._max_pool_axis` without its custom VJP): XLA writes its gradient with
interior-padded scatters. "ours" is `layers.max_pool`, whose VJP sums
edge-padded slices and interleaves them. "reduce_window" is Flax's
`nn.max_pool` (XLA's reduce-window, its gradient a select-and-scatter, which
GPU backends have their own kernels for). The sides are timed alternately,
median of `--repeats` after one warm-up.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import linen as nn

from mtl_ser.models import layers

_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per variant.")
_CALLS = flags.DEFINE_integer("calls", 10, "Calls per timed run.")
_MODELS = flags.DEFINE_string(
    "models", "alexnet,vgg11_half", "Comma-separated: alexnet, vgg11_half, vgg16."
)
_DTYPE = flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.")

# (model, H, W, C, window, stride) of each pool input at input 128 x 64.
POOLS = [
    ("alexnet", 31, 15, 64, 3, 2),
    ("alexnet", 15, 7, 192, 3, 2),
    ("alexnet", 7, 3, 256, 3, 2),
    ("vgg11_half", 128, 64, 32, 2, 2),
    ("vgg11_half", 64, 32, 64, 2, 2),
    ("vgg11_half", 32, 16, 128, 2, 2),
    ("vgg11_half", 16, 8, 256, 2, 2),
    ("vgg11_half", 8, 4, 256, 2, 2),
    # VGG-16 width 1 at input 256 x 128 (the accelerator benchmark's).
    ("vgg16", 256, 128, 64, 2, 2),
    ("vgg16", 128, 64, 128, 2, 2),
    ("vgg16", 64, 32, 256, 2, 2),
    ("vgg16", 32, 16, 512, 2, 2),
    ("vgg16", 16, 8, 512, 2, 2),
]


def autodiff_max_pool(x, window, stride):
    """layers.max_pool's forward, differentiated by JAX (no custom VJP)."""
    pool = layers._max_pool_axis.fun
    return pool(pool(x, 2, window, stride), 1, window, stride)


def reduce_window_max_pool(x, window, stride):
    """Flax's max pool: XLA's reduce-window (select-and-scatter gradient)."""
    return nn.max_pool(x, (window, window), (stride, stride))


def grad_fn(pool, window, stride):
    def loss(x, w):
        return jnp.sum(pool(jax.nn.relu(x), window, stride) * w)

    return jax.jit(jax.grad(loss))


def main(argv):
    del argv
    batch, repeats, calls = _BATCH.value, _REPEATS.value, _CALLS.value
    dtype = jnp.dtype(_DTYPE.value)
    pools = (autodiff_max_pool, layers.max_pool, reduce_window_max_pool)
    print(
        f"batch {batch}, {dtype}, backend {jax.default_backend()}; gradient of "
        f"sum(max_pool(relu(x)) * w), ms per call, median of {repeats} runs of "
        f"{calls} calls, the sides alternating"
    )
    print(
        "| model | pool input [H, W, C] | window/stride | autodiff | ours "
        "| reduce_window | ours / autodiff | ours / reduce_window |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    totals = {}
    models = _MODELS.value.split(",")
    for model, h, w, c, window, stride in (p for p in POOLS if p[0] in models):
        x = jnp.asarray(rng.normal(size=(batch, h, w, c)), dtype)
        out_shape = layers.max_pool(x, window, stride).shape
        cot = jnp.asarray(rng.normal(size=out_shape), dtype)
        fns = [grad_fn(p, window, stride) for p in pools]
        for fn in fns:  # Compile and warm up.
            jax.block_until_ready(fn(x, cot))
        times = tuple([] for _ in fns)
        for _ in range(repeats):
            for fn, record in zip(fns, times, strict=True):
                start = time.perf_counter()
                for _ in range(calls):
                    out = fn(x, cot)
                jax.block_until_ready(out)
                record.append(1e3 * (time.perf_counter() - start) / calls)
        medians = [statistics.median(t) for t in times]
        total = totals.setdefault(model, [0.0] * len(fns))
        for i, m in enumerate(medians):
            total[i] += m
        print(f"| {model} | {h} x {w} x {c} | {window}/{stride} " + _cells(medians))
    for model, total in totals.items():
        print(f"| **{model} total** | | " + _cells(total, bold=True))


def _cells(ms, bold=False) -> str:
    auto, ours, window = ms
    cells = [f"{auto:.2f}", f"{ours:.2f}", f"{window:.2f}"]
    cells += [f"{ours / auto:.2f}", f"{ours / window:.2f}"]
    if bold:
        cells = [f"**{c}**" for c in cells]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    app.run(main)
