"""Two processes on loopback train as one process does, to float rounding.

Issue 5: a two-process run (two `launch.py` processes joined by
`jax.distributed` over 127.0.0.1, gloo CPU collectives, 2 CPU devices each: a
4-device mesh) and a one-process run (1 device) with the same config, seed and
global batch of 8 must log the same training loss at every step.

Dropout is off in both runs. The global batch holds the same 8 examples with
the same crops either way, but in another row order: rows are process-major
(process 0's share, then process 1's), and the one-process batch is in stream
order. Dropout masks are drawn per row of the global batch, so with dropout on
the two runs would pair examples with different masks: equally valid draws,
but different numbers. Everything else in the step is order-independent up to
float rounding.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

from tests.reliability.test_multihost import ROOT, _Pair

NUM_STEPS = 6
RUN_TIMEOUT_S = 240  # Both runs, side by side: 80-90 s on 2 busy cores.
# Relative tolerance on each step's loss. The runs differ only in the order of
# float32 reductions (the batch mean over 4 device shards, the gradients summed
# across processes by gloo, instead of one sum over 8 rows), which moves each
# sum by a few ulps (2^-24 = 6e-8 relative); six Adam steps carried that to
# 1.1e-7 in the loss when this test was written. Real differences are far
# larger: the same two runs with dropout on (rows paired with other masks)
# differ by 1e-3, and another batch or an unreduced gradient by more. 1e-5
# leaves 100x room above rounding and 100x below the smallest real difference.
RTOL = 1e-5


def _argv(workdir, corpus_root, features):
    return [
        "--config=configs/synthetic.py:smoke",
        f"--workdir={workdir}",
        f"--config.corpus.root={corpus_root}",
        f"--config.features.cache_dir={features}",
        f"--config.train.num_steps={NUM_STEPS}",
        "--config.train.log_every=1",  # A loss for every step.
        f"--config.train.eval_every={NUM_STEPS}",
        f"--config.train.checkpoint_every={NUM_STEPS}",
        "--config.train.tensorboard=False",
        "--config.report.figures=False",
        "--config.model.dropout=0.0",  # See the module docstring.
        "--config.optim.warmup_steps=0",  # So that the loss moves from step 1.
    ]


def _losses(workdir) -> np.ndarray:
    """The total training loss of steps 1..NUM_STEPS from metrics.jsonl."""
    losses = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "train/loss/total" in record:
                losses[record["step"]] = record["train/loss/total"]
    assert sorted(losses) == list(range(1, NUM_STEPS + 1)), losses
    return np.array([losses[s] for s in sorted(losses)])


def test_two_processes_follow_the_one_process_loss_trajectory(corpus_root, tmp_path):
    features = str(tmp_path / "features")  # One feature cache for both runs.
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": "1",
        "XLA_FLAGS": " ".join(
            f
            for f in os.environ.get("XLA_FLAGS", "").split()
            if "device_count" not in f
        ),
    }
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    # Side by side: both build the one feature cache, and one of them wins.
    deadline = time.monotonic() + RUN_TIMEOUT_S
    pair = _Pair(
        _argv(two, corpus_root, features), two, jax_cache=str(tmp_path / "jax_cache")
    )
    try:
        with open(one + ".log", "w") as log:
            single = subprocess.Popen(
                [sys.executable, "launch.py", *_argv(one, corpus_root, features)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            pair.wait(deadline)
            code = single.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            if single.poll() is None:
                single.kill()
                single.wait()
    finally:
        pair.kill9()
    with open(one + ".log", errors="replace") as f:
        assert code == 0, f"one-process run: exit code {code}\n{f.read()[-3000:]}"

    expected, got = _losses(one), _losses(two)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)
    # Not a trivial agreement: the loss moves far more than the tolerance from
    # step to step (the median move: two steps may land on nearly one value).
    assert np.median(np.abs(np.diff(expected))) > 100 * RTOL * np.max(expected)
