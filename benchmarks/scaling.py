"""Weak scaling on forced host devices, and a two-process run on loopback.

  .venv/bin/python -m benchmarks.scaling --config=configs/synthetic.py \
      --devices=1,2,4,8 --per_device_batch=8 --steps=10 --two_process_steps=6

1. Weak scaling: for each N in `--devices`, a fresh process with
   `XLA_FLAGS=--xla_force_host_platform_device_count=N` (read when JAX starts,
   hence one process per N) times the config's train step at a global batch of
   N x `--per_device_batch` (`common.measure`: AOT compile, median step after
   warm-up, random input). Efficiency is samples/s over the 1-device samples/s.
   Forced host devices are not more hardware: all N share this machine's
   cores, so the ideal here is flat samples/s (efficiency 1.0), not N x; what
   falls short of 1.0 is the cost of cutting the step N ways (smaller
   per-device GEMMs, per-device dispatch, the gradient all-reduce).
2. Two processes: two local processes joined by `jax.distributed` over
   127.0.0.1 (gloo CPU collectives, `--two_process_devices` CPU devices each)
   train the smoke model (`--smoke`) for `--two_process_steps` steps on fixed
   random global batches (one per step, the same on every process; each
   process transfers the rows its devices hold), and one process with one
   device trains on the same batches. Prints both loss trajectories, their
   largest difference, and the step time of each (median after the first).
   Dropout stays on: both runs see each global batch row for row, so each row
   gets the same mask. (Training from the data pipeline, a two-process batch
   holds the same examples process-major, another row order; see
   tests/training/test_scaling.py, which runs launch.py both ways.)
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
_RESULT = "SCALING_RESULT "  # Prefix of a worker's one result line on stdout.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 600


def define_flags():
    """Defined only when run as a program, so that importing defines none."""
    flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
    flags.DEFINE_string("devices", "1,2,4,8", "Forced host device counts.")
    flags.DEFINE_integer("per_device_batch", 8, "Weak scaling: batch per device.")
    flags.DEFINE_integer("steps", 10, "Weak scaling: timed steps per count.")
    flags.DEFINE_integer("two_process_steps", 6, "Two-process run: steps.")
    flags.DEFINE_integer("two_process_batch", 8, "Two-process run: global batch.")
    flags.DEFINE_integer("two_process_devices", 1, "Two-process run: devices each.")
    flags.DEFINE_bool("smoke", True, "Two-process run: the config's smoke size.")
    flags.DEFINE_enum(
        "role", "main", ["main", "weak", "train"], "Internal: what this process is."
    )


def _clean_env(**extra) -> dict:
    """This environment without device-count settings or a job, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "JAX_NUM_CPU_DEVICES",
            "JAX_COORDINATOR_ADDRESS",
            "JAX_NUM_PROCESSES",
            "JAX_PROCESS_ID",
        )
    }
    env["XLA_FLAGS"] = " ".join(
        f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f
    )
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _worker_argv(role: str) -> list:
    names = (
        "config",
        "per_device_batch",
        "steps",
        "two_process_steps",
        "two_process_batch",
        "smoke",
    )
    return [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        f"--role={role}",
        *(f"--{n}={FLAGS[n].value}" for n in names),
    ]


def _result_of(stdout: str, what: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT) :])
    raise RuntimeError(f"{what}: no result line\n{stdout[-3000:]}")


def weak_scaling(device_counts) -> list:
    """One subprocess per device count; returns their common.measure results."""
    rows = []
    for n in device_counts:
        flags_text = f"--xla_force_host_platform_device_count={n}"
        env = _clean_env()
        env["XLA_FLAGS"] = f"{env['XLA_FLAGS']} {flags_text}".strip()
        proc = subprocess.run(
            _worker_argv("weak"),
            cwd=_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
        if proc.returncode:
            raise RuntimeError(f"{n} devices: exit {proc.returncode}\n{proc.stderr}")
        rows.append(_result_of(proc.stdout, f"{n} devices"))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_run(devices_per_process: int) -> tuple:
    """(one-process result, two-process result): losses and step times."""
    port = _free_port()
    procs = []
    for i in range(2):
        env = _clean_env(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(i),
            JAX_NUM_CPU_DEVICES=str(devices_per_process),
        )
        procs.append(
            subprocess.Popen(
                _worker_argv("train"),
                cwd=_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [p.communicate(timeout=_TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        if p.returncode:
            raise RuntimeError(f"two-process run, process {i}: exit\n{out[-3000:]}")
    two = _result_of(outputs[0], "two-process run")
    proc = subprocess.run(
        _worker_argv("train"),
        cwd=_ROOT,
        env=_clean_env(JAX_NUM_CPU_DEVICES="1"),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    if proc.returncode:
        raise RuntimeError(f"one-process run: exit {proc.returncode}\n{proc.stderr}")
    return _result_of(proc.stdout, "one-process run"), two


def _load(config_path: str, smoke: bool):
    from benchmarks import common
    from configs import default

    config = common.load_config(config_path)
    if smoke:
        default.smoke(config)
    return config


def _weak_worker():
    """Times the step at N x per_device_batch on this process's N devices."""
    import jax

    from benchmarks import common

    config = _load(FLAGS.config, smoke=False)
    n = jax.device_count()
    r = common.measure(config, n * FLAGS.per_device_batch, FLAGS.steps)
    r.update(devices=n, global_batch=n * FLAGS.per_device_batch)
    print(_RESULT + json.dumps(r), flush=True)


def _train_worker():
    """Trains on fixed random global batches; process 0 prints the losses."""
    from mtl_ser.training import build, distributed

    distributed.maybe_initialize()  # Before any device is touched.
    import jax

    from benchmarks import common
    from mtl_ser import tasks as tasks_lib
    from mtl_ser.training import sharding

    c = _load(FLAGS.config, smoke=FLAGS.smoke)
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    mesh = sharding.make_mesh()
    steps = build.build_steps(c, tasks, mesh)
    state, losses, times = steps.state, [], []
    for step in range(FLAGS.two_process_steps):
        batch = common._random_batch(
            tasks,
            FLAGS.two_process_batch,
            c.data.crop_frames,
            c.features.n_mels,
            np.random.default_rng(step),
        )
        batch = sharding.from_global(batch, mesh)
        start = time.perf_counter()
        state, metrics = steps.train_fn(state, batch, None)
        losses.append(float(jax.device_get(metrics["train/loss/total"])))
        times.append(time.perf_counter() - start)
    if jax.process_index() == 0:
        result = {
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "losses": losses,
            "step_ms": 1e3 * statistics.median(times[1:] or times),
        }
        print(_RESULT + json.dumps(result), flush=True)
    jax.distributed.shutdown()


def run(device_counts, devices_per_process: int) -> dict:
    """Both parts; see the module docstring. FLAGS must be parsed."""
    one, two = two_process_run(devices_per_process)
    return {"weak": weak_scaling(device_counts), "one": one, "two": two}


def main(argv):
    del argv
    if FLAGS.role == "weak":
        return _weak_worker()
    if FLAGS.role == "train":
        return _train_worker()
    from benchmarks.features import settings_header

    counts = [int(n) for n in FLAGS.devices.split(",")]
    r = run(counts, FLAGS.two_process_devices)
    print(settings_header())
    print(
        f"Weak scaling: {FLAGS.config}, {FLAGS.per_device_batch} per device, "
        f"median of {FLAGS.steps} steps, random input. All devices share the "
        f"{os.cpu_count()} CPU cores: the ideal is flat samples/s (efficiency "
        "1.0), not N x."
    )
    print("| devices | global batch | step ms | steps/s | samples/s | efficiency |")
    print("|---|---|---|---|---|---|")
    base = r["weak"][0]["samples_per_s"]
    for w in r["weak"]:
        print(
            f"| {w['devices']} | {w['global_batch']} | {w['step_ms']:.1f} "
            f"| {1e3 / w['step_ms']:.1f} | {w['samples_per_s']:.0f} "
            f"| {w['samples_per_s'] / base:.2f} |"
        )
    one, two = r["one"], r["two"]
    print(
        f"\nTwo processes on 127.0.0.1 (gloo) vs one process: {FLAGS.config}"
        f"{' smoke' if FLAGS.smoke else ''}, global batch "
        f"{FLAGS.two_process_batch}, the same random batch per step."
    )
    print("| run | devices | step ms | loss per step |")
    print("|---|---|---|---|")
    for name, res in (("1 process", one), ("2 processes", two)):
        losses = ", ".join(f"{v:.6f}" for v in res["losses"])
        print(f"| {name} | {res['devices']} | {res['step_ms']:.1f} | {losses} |")
    a, b = np.array(one["losses"]), np.array(two["losses"])
    print(
        f"max |loss difference| {np.max(np.abs(a - b)):.2e} "
        f"(relative {np.max(np.abs(a - b) / np.abs(a)):.2e})"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
