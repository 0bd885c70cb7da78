"""Train-step time of every weighting method, relative to `equal`, in one run.

  .venv/bin/python -m benchmarks.weighting --config=configs/synthetic.py \
      --batch_size=32 --steps=20

For each method: the median step time (random input, AOT-compiled, 3 warm-up
steps, block_until_ready per step) and its ratio to `equal`. Every row is
timed in each of --rounds rounds over all rows and reports its fastest round:
on a 2-core machine one executable can run at 14 ms in one spell and 20 ms in
the next, which single timings turned into ratios of 0.67 or 1.47 for
methods whose step is `equal`'s. Two references
frame the gradient-based methods, which need T per-task gradients:
  `sum_vmap`: the T task gradients from one batched (vmapped) backward pass,
    summed: the floor of our gradient path;
  `sum_loop`: T separate backward passes, summed: what a PyTorch
    implementation such as LibMTL pays (one `backward()` per task).
A gradient method's `vs T backward` column is its time over `sum_loop`'s.
MoDo and SDMGrad take three batches per step (3 x batch_size examples): their
reference is `sum_loop_3`, the 3 T separate backward passes of three batches,
and their `vs equal` is against `equal` on one batch (what a step costs them).
"""

import jax.numpy as jnp
from absl import app, flags

from benchmarks import common
from mtl_ser import tasks as tasks_lib
from mtl_ser import weighting
from mtl_ser.weighting.base import GradOutput, Method

_CONFIG = flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per method.")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 3, "Rounds over all rows; each row reports its fastest round."
)
_METHODS = flags.DEFINE_string(
    "methods", "all", "Comma-separated weighting methods, or 'all'."
)


def _sum_aggregate(params, state, losses, grads, *, step, rng):
    del params, step, rng
    ones = jnp.ones_like(losses)
    return GradOutput(grads.sum(0), ones, ones, state, {}, ones)


def _sum3_aggregate(params, state, losses, grads, *, step, rng):
    del params, step, rng
    ones = jnp.ones(losses.shape[-1:])
    return GradOutput(grads.sum((0, 1)), ones, ones, state, {}, ones)


SUM_OF_TASK_GRADIENTS = Method(
    "sum", lambda num_tasks: ({}, {}), aggregate=_sum_aggregate
)
SUM_OF_THREE_BATCHES = Method(
    "sum3", lambda num_tasks: ({}, {}), aggregate=_sum3_aggregate, batches_per_step=3
)


def main(argv):
    del argv
    config = common.load_config(_CONFIG.value)
    names = (
        [m for m in weighting.METHODS if m != "fixed"]
        if _METHODS.value == "all"
        else _METHODS.value.split(",")
    )
    print(
        f"model {config.model.name} width {config.model.width}, "
        f"{len(config.tasks.split(','))} tasks, batch {_BATCH.value}, "
        f"{config.model.dtype}, {config.optim.name}"
    )
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    runs = []  # (label, needs per-task gradients, batches per step, compiled)
    references = (
        ("sum_vmap", "vmap", SUM_OF_TASK_GRADIENTS),
        ("sum_loop", "loop", SUM_OF_TASK_GRADIENTS),
        ("sum_loop_3", "loop", SUM_OF_THREE_BATCHES),
    )
    for label, per_task, method in references:
        config.weighting.per_task_grads = per_task
        batch = _BATCH.value * method.batches_per_step
        run = common.compile_step(config, batch, method=method)
        runs.append((label, True, method.batches_per_step, run))
    config.weighting.per_task_grads = "vmap"
    for name in names:
        config.weighting.name = name
        method = weighting.make_method(config.weighting, tasks)
        run = common.compile_step(config, _BATCH.value * method.batches_per_step)
        runs.append((name, method.needs_grads, method.batches_per_step, run))
    # Every step is timed once per round, the rounds one after another; a row
    # takes its fastest round, so a slow spell of the machine moves no ratio.
    medians = {label: [] for label, *_ in runs}
    for _ in range(_ROUNDS.value):
        for label, _, _, run in runs:
            medians[label].append(common.time_step(run, _STEPS.value))
    rows = [
        (label, needs, {"step_ms": 1e3 * min(medians[label]), "temp_mib": r.temp_mib})
        for label, needs, _, r in runs
    ]
    batches = {label: b for label, _, b, _ in runs}
    spread = max(max(m) / min(m) for m in medians.values())
    print(
        f"{_ROUNDS.value} rounds; a row's slowest round over its fastest: "
        f"up to {spread:.2f}"
    )
    by_name = {label: r for label, _, r in rows}
    equal_ms = by_name["equal"]["step_ms"] if "equal" in by_name else None
    loop_ms = {1: by_name["sum_loop"]["step_ms"], 3: by_name["sum_loop_3"]["step_ms"]}
    print(
        "| method | gradients | batches | step ms | vs equal | vs T backward "
        "| temp MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, needs_grads, r in rows:
        vs_equal = f"{r['step_ms'] / equal_ms:.2f}" if equal_ms else "n/a"
        vs_loop = f"{r['step_ms'] / loop_ms[batches[label]]:.2f}" if needs_grads else ""
        print(
            f"| {label} | {'per task' if needs_grads else 'total'} "
            f"| {batches[label]} | {r['step_ms']:.1f} | {vs_equal} | {vs_loop} "
            f"| {r['temp_mib']:.0f} |"
        )


if __name__ == "__main__":
    app.run(main)
