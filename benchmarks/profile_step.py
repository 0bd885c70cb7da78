"""Where a train step's time goes: per-op times from a jax.profiler trace.

  .venv/bin/python -m benchmarks.profile_step --model=alexnet --batch_size=64

Traces `--steps` steps of a benchmarks.common preset's train step (random input)
and sums each XLA op's time over the CPU worker threads, per step; each op is
described from the compiled HLO (its shape and what its fusion does:
convolution, dot, reduce, select, ...). On CPU, XLA runs independent ops on
both cores at once, so the sum over threads is about twice the step's wall
time; read the shares, not the sum. Convolutions that XLA emits itself (Eigen)
are not traced as ops: their time is the step's remainder. A `cond` (the
optimizer update) is a container: its time includes the ops it runs.
"""

import collections
import glob
import os
import re
import statistics
import tempfile
import time

# Per-op trace events of XLA CPU's thunks, read when JAX starts.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.common import make_config  # noqa: E402
from mtl_ser import tasks as tasks_lib  # noqa: E402
from mtl_ser.training import build, sharding  # noqa: E402

_MODEL = flags.DEFINE_string(
    "model", "alexnet", "A preset of benchmarks.common.PRESETS."
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Traced steps.")
_TOP = flags.DEFINE_integer("top", 30, "Ops listed.")
_FUSIONS = flags.DEFINE_string(
    "cpu_library_fusions", "", "train.cpu_library_fusions; empty: the config's."
)
_NOT_OPS = ("ThunkExecutor", "SlinkyThreadPool")


def op_times(trace_dir: str, steps: int) -> collections.Counter:
    """ms per step of each op name, summed over the XLA CPU worker threads."""
    path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
    totals = collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:
                continue
            for event in line.events:
                if not event.name.startswith(_NOT_OPS):
                    totals[event.name] += event.duration_ns / 1e6 / steps
    return totals


def describe(hlo: str, name: str) -> str:
    """The op's result shape and the main ops of the computation it calls."""
    match = re.search(rf"\n\s*%?{re.escape(name)} = (\S+)[^\n]*", hlo)
    if not match:
        return ""
    shape, line = match.group(1), match.group(0)
    called = re.search(r"calls=%?([\w.\-]+)", line)
    if not called:
        return shape
    body = re.search(
        rf"\n%?{re.escape(called.group(1))} [^\n]*\{{\n(.*?)\n\}}", hlo, re.S
    )
    if not body:
        return shape
    ops = collections.Counter(re.findall(r" (\w+)\(", body.group(1)))
    for skip in ("parameter", "constant", "broadcast", "bitcast"):
        ops.pop(skip, None)
    kinds = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in ops.most_common(4))
    return f"{shape} ({kinds})"


def main(argv):
    del argv
    config = make_config(_MODEL.value)
    if _FUSIONS.value:
        config.train.cpu_library_fusions = _FUSIONS.value
    tasks = tasks_lib.make_tasks(
        config.tasks, config.emotion_classes, config.regression_loss
    )
    mesh = sharding.make_mesh()
    steps = build.build_steps(config, tasks, mesh)
    batch = common._random_batch(
        tasks,
        _BATCH.value,
        config.data.crop_frames,
        config.features.n_mels,
        np.random.default_rng(0),
    )
    batch = sharding.from_process_local(batch, mesh)
    compiled = steps.train_fn.lower(steps.state, batch, None).compile()
    state = steps.state
    times = []
    for i in range(3 + _STEPS.value):
        start = time.perf_counter()
        state, _ = compiled(state, batch, None)
        jax.block_until_ready(state)
        if i >= 3:
            times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(_STEPS.value):
            state, _ = compiled(state, batch, None)
            jax.block_until_ready(state)
        jax.profiler.stop_trace()
        totals = op_times(trace_dir, _STEPS.value)
    hlo = compiled.as_text()
    step_ms = 1e3 * statistics.median(times)
    traced = sum(totals.values())
    print(
        f"{_MODEL.value}, batch {_BATCH.value}, train.cpu_library_fusions="
        f"{config.train.cpu_library_fusions!r}: step {step_ms:.1f} ms untraced "
        f"(median of {_STEPS.value}); traced op time {traced:.1f} ms per step, "
        "summed over threads"
    )
    print("| ms per step | share of traced | op | shape (what it does) |")
    print("|---|---|---|---|")
    for name, ms in totals.most_common(_TOP.value):
        print(f"| {ms:.2f} | {ms / traced:.1%} | {name} | {describe(hlo, name)} |")


if __name__ == "__main__":
    app.run(main)
