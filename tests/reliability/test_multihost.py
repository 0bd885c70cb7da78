"""Multi-host: two processes on loopback train, are killed, resume; data shards.

Issue 7, item 7. The two-process runs are real `launch.py` processes joined by
`jax.distributed` over 127.0.0.1 (gloo CPU collectives, 2 CPU devices each, so
a 4-device mesh across two processes), sharing one workdir and one feature
cache. One run is stopped with a real SIGKILL of both processes after a
checkpoint is on disk and before the end, then the same command resumes it.

The remainder rule checked below: none. The training stream is the endless
sequence of epoch permutations cut into global batches, so a batch may hold
the end of one epoch and the start of the next; every example of every epoch
goes to exactly one process exactly once. Process p takes global positions
p, p + P, ..., so when P does not divide the split, the processes' shares of
one epoch differ by at most one example.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tests
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import pipeline, run_data

ROOT = tests.ROOT
NUM_STEPS, CHECKPOINT_EVERY, EVAL_EVERY = 8, 2, 4
HANG_BEFORE_STEP = 6  # The killed run holds here: checkpoint 4 saved, step 5 done.
RUN_TIMEOUT_S = 240  # For all three runs (55-95 s on a busy 2-core machine).

# `launch.py` whose train loop records the utterances of each local batch in
# `<prefix><process>.utt` and holds before step HANG_BEFORE_STEP (touching
# `<prefix><process>.held`), so that the SIGKILL lands at a known point: after
# checkpoint 4, with the data iterator already past it, before the end.
_HOLDING_LAUNCH = f"""
import json, os, runpy, sys, time
import jax
from mtl_ser.training import sharding
real, prefix = sharding.from_process_local, os.environ["MULTIHOST_TEST_RECORD"]
calls = [0]
def recorded(batch, mesh):
    calls[0] += 1
    me = prefix + str(jax.process_index())
    if calls[0] == {HANG_BEFORE_STEP}:
        open(me + ".held", "w").close()
        time.sleep(3600)
    with open(me + ".utt", "a") as f:
        f.write(json.dumps(batch["utt"].tolist()) + "\\n")
    return real(batch, mesh)
sharding.from_process_local = recorded
sys.argv[0] = "launch.py"
runpy.run_path("launch.py", run_name="__main__")
"""


# In-process: the data shards of P processes.


def _stream(split, data, *, process_index, process_count, num_batches):
    """(utt [n], db [n, T, F]) of this process's first `num_batches` batches."""
    it = iter(
        pipeline.train_dataset(
            split,
            data,
            crop=64,
            batch_size=6,  # Divisible by 2 and 3 processes.
            seed=0,
            process_index=process_index,
            process_count=process_count,
        )
    )
    batches = [next(it) for _ in range(num_batches)]
    return (
        np.concatenate([b["utt"] for b in batches]),
        np.concatenate([b["db"] for b in batches]),
    )


@pytest.fixture(scope="module")
def train_split(corpus_root):
    from configs import synthetic

    config = synthetic.get_config("smoke")
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    tasks = tasks_lib.make_tasks(
        config.tasks, config.emotion_classes, config.regression_loss
    )
    data = run_data.build_data(config, tasks, verbose=False)
    return data.splits["train"], data


@pytest.mark.parametrize("num_processes", [2, 3])
def test_process_shards_are_disjoint_and_cover_every_epoch(train_split, num_processes):
    split, data = train_split
    n, epochs = len(split), 3
    if num_processes == 3:
        assert n % num_processes, "the uneven case needs a split of 3k+1 or 3k+2"
    num_batches = epochs * n // 6 + 1  # Global batches of 6: past 3 epochs.
    single, _ = _stream(
        split, data, process_index=0, process_count=1, num_batches=num_batches
    )
    owner, utt_at = {}, {}  # Global stream position -> process, utterance.
    for p in range(num_processes):
        utt, _ = _stream(
            split,
            data,
            process_index=p,
            process_count=num_processes,
            num_batches=num_batches,
        )
        assert len(utt) == num_batches * 6 // num_processes
        for j, u in enumerate(utt):
            position = p + j * num_processes
            assert position not in owner
            owner[position], utt_at[position] = p, int(u)
    orders = []
    for e in range(epochs):
        positions = range(e * n, (e + 1) * n)
        order = [utt_at[q] for q in positions]
        assert sorted(order) == list(range(n)), f"epoch {e}: {order}"
        sizes = np.bincount([owner[q] for q in positions], minlength=num_processes)
        assert sizes.max() - sizes.min() <= 1, f"epoch {e}: share sizes {sizes}"
        orders.append(order)
    # Interleaved, the shares are exactly the one-process stream.
    assert sum(orders, []) == single[: epochs * n].tolist()
    assert orders[0] != orders[1], "every epoch should be a new permutation"


@pytest.mark.parametrize("num_processes", [2, 3])
def test_crops_do_not_depend_on_the_number_of_processes(train_split, num_processes):
    # Each example's random crop must follow from its place in the global
    # stream, not from its place in one process's share; otherwise process p's
    # k-th crop is drawn like every other process's k-th crop.
    split, data = train_split
    one_utt, one_x = _stream(
        split, data, process_index=0, process_count=1, num_batches=num_processes * 2
    )
    for p in range(num_processes):
        utt, x = _stream(
            split,
            data,
            process_index=p,
            process_count=num_processes,
            num_batches=num_processes * 2,
        )
        positions = p + num_processes * np.arange(len(utt))
        np.testing.assert_array_equal(utt, one_utt[positions])
        for j, position in enumerate(positions):
            same = np.array_equal(x[j], one_x[position])
            assert same, (
                f"process {p} of {num_processes}: example {j} (utterance "
                f"{utt[j]}) is cropped differently than with one process"
            )


# Two real processes on loopback.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Pair:
    """The two launch.py processes of one job, logging to `<name>.p<i>.log`.

    Every pair of a test shares one persistent JAX compilation cache (written
    by process 0 only), so only the first pair compiles: it keeps the test
    short, and it makes the later runs fast enough to save two checkpoints of
    one step at the same time, as a long run does.
    """

    def __init__(self, argv, name, *, jax_cache, record=None):
        port = _free_port()
        self.logs = [f"{name}.p{i}.log" for i in range(2)]
        self.procs = []
        program = ["-c", _HOLDING_LAUNCH] if record else ["launch.py"]
        for i in range(2):
            env = {
                **os.environ,
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_COORDINATOR_BIND_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
                "JAX_NUM_CPU_DEVICES": "2",
                "JAX_PLATFORMS": "cpu",
                "JAX_COMPILATION_CACHE_DIR": jax_cache,
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "MULTIHOST_TEST_RECORD": record or "",
            }
            # Each process has its 2 devices from JAX_NUM_CPU_DEVICES.
            env["XLA_FLAGS"] = " ".join(
                f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f
            )
            with open(self.logs[i], "w") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, *program, *argv],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def tails(self) -> str:
        out = []
        for path in self.logs:
            with open(path, errors="replace") as f:
                out.append(f"--- {path}\n" + "".join(f.readlines()[-30:]))
        return "\n".join(out)

    def in_trouble(self) -> bool:
        """Whether a process failed or logged a Python traceback."""
        if any(p.poll() not in (None, 0) for p in self.procs):
            return True
        for path in self.logs:
            with open(path, errors="replace") as f:
                if "Traceback (most recent call last)" in f.read():
                    return True
        return False

    def wait(self, deadline: float):
        """Waits for both processes; fails (with their logs) on error or timeout."""
        while any(p.poll() is None for p in self.procs):
            if time.monotonic() > deadline or self.in_trouble():
                raise AssertionError(f"two-process run failed\n{self.tails()}")
            time.sleep(0.1)
        codes = [p.returncode for p in self.procs]
        assert codes == [0, 0], f"exit codes {codes}\n{self.tails()}"

    def kill9(self):
        """SIGKILL to both processes (none to one already gone)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()


def _wait_until(condition, pair: _Pair, deadline: float, what: str):
    while not condition():
        ended = any(p.poll() is not None for p in pair.procs)
        if time.monotonic() > deadline or ended or pair.in_trouble():
            raise AssertionError(f"never reached: {what}\n{pair.tails()}")
        time.sleep(0.05)


def _host_state(workdir, step) -> dict:
    """The train state saved at `step` (by 2 processes), as numpy arrays."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(
            path, args=ocp.args.PyTreeRestore(restore_args=args)
        )


def _results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def test_two_processes_killed_and_resumed_match_the_uninterrupted_run(
    corpus_root, train_split, tmp_path
):
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    jax_cache, record = str(tmp_path / "jax_cache"), str(tmp_path / "record.p")
    features = tmp_path / "features"

    def argv(workdir):
        return [
            "--config=configs/synthetic.py:smoke",
            f"--workdir={workdir}",
            f"--config.corpus.root={corpus_root}",
            # A fresh feature cache: both processes build it at the same time.
            f"--config.features.cache_dir={features}",
            f"--config.train.num_steps={NUM_STEPS}",
            f"--config.train.checkpoint_every={CHECKPOINT_EVERY}",
            f"--config.train.eval_every={EVAL_EVERY}",
            "--config.train.tensorboard=False",
        ]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    pairs = []
    try:
        pairs.append(_Pair(argv(whole), whole, jax_cache=jax_cache))
        pairs[-1].wait(deadline)
        assert len(os.listdir(features)) == 1, f"not one finished cache: {features}"

        pairs.append(
            killed := _Pair(argv(split), split, jax_cache=jax_cache, record=record)
        )
        _wait_until(
            lambda: (
                all(os.path.exists(f"{record}{i}.held") for i in range(2))
                and os.path.isdir(os.path.join(split, "checkpoints", "4"))
                and os.path.isdir(os.path.join(split, "best", "4"))
            ),
            killed,
            deadline,
            f"both processes held before step {HANG_BEFORE_STEP}, checkpoint 4 saved",
        )
        killed.kill9()
        codes = [p.returncode for p in killed.procs]
        assert codes == [-signal.SIGKILL] * 2, killed.tails()
        assert sorted(os.listdir(os.path.join(split, "checkpoints"))) == ["2", "4"]
        assert not os.path.exists(os.path.join(split, "results.json"))

        # The same command again, with the training log-mels on the devices:
        # where the crops are gathered changes nothing of the run.
        resume = [*argv(split), "--config.data.device_cache=True"]
        pairs.append(resumed := _Pair(resume, split + ".resumed", jax_cache=jax_cache))
        resumed.wait(deadline)
    finally:
        for pair in pairs:
            pair.kill9()
    with open(resumed.logs[0]) as f:
        log = f.read()
    assert f"Resumed from step 4 in {split}" in log, resumed.tails()
    assert "training log-mels on each of 4 device(s)" in log, resumed.tails()

    # Steps 1-5 of the killed run: each global batch of 8 is process 0's
    # global positions 0, 2, .., 6 and process 1's 1, 3, .., 7 of the
    # one-process order, so the shares are disjoint and cover every epoch.
    steps = HANG_BEFORE_STEP - 1
    single, _ = _stream(*train_split, process_index=0, process_count=1, num_batches=7)
    for p in range(2):
        with open(f"{record}{p}.utt") as f:
            seen = np.array([json.loads(line) for line in f])
        positions = p + 2 * np.arange(steps * 4).reshape(steps, 4)
        np.testing.assert_array_equal(seen, single[positions], f"process {p}")

    expected, got = _host_state(whole, NUM_STEPS), _host_state(split, NUM_STEPS)
    assert int(got["step"]) == NUM_STEPS

    def same(path, a, b):
        where = f"state{jax.tree_util.keystr(path)} at step {NUM_STEPS}"
        np.testing.assert_array_equal(a, b, err_msg=f"{where}: resumed != whole")

    jax.tree_util.tree_map_with_path(same, got, expected)
    assert _results(split)["scalars"] == _results(whole)["scalars"]
    assert _results(split)["best_step"] == _results(whole)["best_step"]
