"""Guarantees 1, 2 and 6: kill -9, SIGTERM and a second process on the workdir.

Each test runs launch.py in a subprocess (4 forced CPU devices, as the
in-process reference run has) and injects the real fault.
"""

import os
import random
import signal
import subprocess
import sys
import time

import chex
import orbax.checkpoint as ocp
import pytest

import tests
from mtl_ser.training import loop, preemption

ROOT = tests.ROOT
STEPS = 200
OVERRIDES = {
    "train.num_steps": STEPS,
    "train.checkpoint_every": 10,
    "train.log_every": 5,
    "train.eval_every": 100,
    "train.tensorboard": False,
}


def _config(smoke_config):
    for key, value in OVERRIDES.items():
        section, field = key.split(".")
        smoke_config[section][field] = value
    return smoke_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_root):
    """Final parameters of an uninterrupted run (in-process, 4 devices)."""
    from configs import synthetic

    config = _config(synthetic.get_config("smoke"))
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    workdir = str(tmp_path_factory.mktemp("reference"))
    loop.train_and_evaluate(config, workdir)
    return _final_params(workdir)


def _final_params(workdir):
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    assert manager.latest_step() == STEPS
    restored = manager.restore(
        STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
    return restored.state["params"]


def _launch(workdir, corpus_root):
    """Starts launch.py on `workdir` with the reference config."""
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/synthetic.py:smoke",
        f"--workdir={workdir}",
        f"--config.corpus.root={corpus_root}",
        f"--config.features.cache_dir={os.path.join(corpus_root, 'cache')}",
        *(f"--config.{k}={v}" for k, v in OVERRIDES.items()),
    ]
    flags = os.environ.get("XLA_FLAGS", "")  # The suite's, as the reference's.
    env = {
        **os.environ,
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4".strip(),
    }
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(proc, workdir, at_least: int, timeout=120.0) -> int:
    """Polls until a checkpoint of step >= at_least exists; returns its step."""
    folder = os.path.join(workdir, "checkpoints")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        names = os.listdir(folder) if os.path.isdir(folder) else []
        steps = [int(x) for x in names if x.isdigit()]
        if steps and max(steps) >= at_least:
            return max(steps)
        time.sleep(0.02)
    raise TimeoutError(f"no checkpoint >= {at_least} in {folder}")


def _finish(proc, timeout=180):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def test_kill_9_anywhere_then_the_same_command_ends_bitwise_equal(
    reference, corpus_root, tmp_path
):
    workdir = str(tmp_path / "run")
    first = _launch(workdir, corpus_root)
    try:
        _wait_for_checkpoint(first, workdir, at_least=random.choice([10, 30, 50]))
        time.sleep(random.uniform(0.0, 0.3))  # Anywhere: mid-step, mid-save...
        first.send_signal(signal.SIGSTOP)  # Frozen, but alive and holding the lock.
        assert first.poll() is None, "the run ended before it could be killed"

        # Guarantee 6: a second process on the same workdir refuses to start.
        second = _launch(workdir, corpus_root)
        code, _, err = _finish(second)
        assert code == 2, err
        assert f"in use by pid {first.pid}" in err.strip().splitlines()[-1]

        first.kill()  # SIGKILL.
        first.wait(timeout=30)
    finally:
        first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    # A checkpoint write cut short by a kill leaves a temporary folder behind
    # (Orbax commits by renaming it); one past the latest step is never read.
    folder = os.path.join(workdir, "checkpoints")
    latest = max(int(x) for x in os.listdir(folder) if x.isdigit())
    partial = os.path.join(folder, f"{latest + 5}.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(partial, "state"))
    with open(os.path.join(partial, "state", "half_written"), "wb") as f:
        f.write(b"\0" * 100)

    code, out, err = _finish(_launch(workdir, corpus_root))
    assert code == 0, err
    assert f"(pid {first.pid}) is no longer running" in out
    assert f"Resumed from step {latest}" in out
    chex.assert_trees_all_equal(_final_params(workdir), reference)


def test_sigterm_saves_at_the_next_step_and_resumes_bitwise_equal(
    reference, corpus_root, tmp_path
):
    workdir = str(tmp_path / "run")
    proc = _launch(workdir, corpus_root)
    try:
        _wait_for_checkpoint(proc, workdir, at_least=20)
        proc.send_signal(signal.SIGTERM)
        code, _, err = _finish(proc, timeout=60)
    finally:
        proc.kill()
    assert code == preemption.EXIT_PREEMPTED, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("Preempted: SIGTERM: saved a checkpoint at step ")
    saved = int(message.split("at step ")[1].split()[0])
    assert 20 <= saved < STEPS  # The step boundary after the signal, mid-run.
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    assert manager.latest_step() == saved
    assert not os.path.exists(os.path.join(workdir, "lock"))

    code, out, err = _finish(_launch(workdir, corpus_root))
    assert code == 0, err
    assert f"Resumed from step {saved}" in out
    chex.assert_trees_all_equal(_final_params(workdir), reference)


def test_sigint_is_recorded_once_and_a_second_one_interrupts(default_sigint):
    # The SIGTERM test above shows the loop's side; this one is SIGINT's.
    with preemption.StopRequests() as stops:
        assert stops.requested(1) is None
        signal.raise_signal(signal.SIGINT)
        assert stops.requested(1) == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
