"""Max pooling's forward + backward: autodiff of the running maximum vs ours.

  .venv/bin/python -m benchmarks.max_pool --batch_size=64

For every max pool of AlexNet (width 1; 3x3, stride 2) and VGG-11 (width 0.5;
2x2, stride 2) at input [B, 128, 64, 1]: the jitted gradient of
sum(max_pool(relu(x)) * w) with respect to x, as in the train step (ReLU,
pool, and the pool's input gradient). "autodiff" differentiates the running
maximum of strided slices (`layers._max_pool_axis` without its custom VJP):
XLA writes its gradient with interior-padded scatters. "ours" is
`layers.max_pool`, whose VJP sums edge-padded slices and interleaves them.
Both sides are timed alternately, median of `--repeats` after one warm-up.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from mtl_ser.models import layers

_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per variant.")
_CALLS = flags.DEFINE_integer("calls", 10, "Calls per timed run.")

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
]


def autodiff_max_pool(x, window, stride):
    """layers.max_pool's forward, differentiated by JAX (no custom VJP)."""
    pool = layers._max_pool_axis.fun
    return pool(pool(x, 2, window, stride), 1, window, stride)


def grad_fn(pool, window, stride):
    def loss(x, w):
        return jnp.sum(pool(jax.nn.relu(x), window, stride) * w)

    return jax.jit(jax.grad(loss))


def main(argv):
    del argv
    batch, repeats, calls = _BATCH.value, _REPEATS.value, _CALLS.value
    print(
        f"batch {batch}, float32, backend {jax.default_backend()}; gradient of "
        f"sum(max_pool(relu(x)) * w), ms per call, median of {repeats} runs of "
        f"{calls} calls, the two sides alternating"
    )
    print("| model | pool input [H, W, C] | window/stride | autodiff | ours | ratio |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    totals = {}
    for model, h, w, c, window, stride in POOLS:
        x = jnp.asarray(rng.normal(size=(batch, h, w, c)).astype(np.float32))
        out_shape = layers.max_pool(x, window, stride).shape
        cot = jnp.asarray(rng.normal(size=out_shape).astype(np.float32))
        fns = [grad_fn(p, window, stride) for p in (autodiff_max_pool, layers.max_pool)]
        for fn in fns:  # Compile and warm up.
            jax.block_until_ready(fn(x, cot))
        times = ([], [])
        for _ in range(repeats):
            for fn, record in zip(fns, times, strict=True):
                start = time.perf_counter()
                for _ in range(calls):
                    out = fn(x, cot)
                jax.block_until_ready(out)
                record.append(1e3 * (time.perf_counter() - start) / calls)
        auto, ours = (statistics.median(t) for t in times)
        total = totals.setdefault(model, [0.0, 0.0])
        total[0], total[1] = total[0] + auto, total[1] + ours
        print(
            f"| {model} | {h} x {w} x {c} | {window}/{stride} | {auto:.2f} "
            f"| {ours:.2f} | {ours / auto:.2f} |",
            flush=True,
        )
    for model, (auto, ours) in totals.items():
        print(
            f"| **{model} total** | | | **{auto:.2f}** | **{ours:.2f}** "
            f"| **{ours / auto:.2f}** |"
        )


if __name__ == "__main__":
    app.run(main)
