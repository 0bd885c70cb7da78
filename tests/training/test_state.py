"""The train state on its own: born sharded, moving averages (training/state.py;
its shapes as a restore target: tests/training/test_build.py)."""

import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.training import build, sharding
from mtl_ser.training import state as state_lib


def _tasks(c):
    return tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)


def test_a_new_state_starts_at_step_zero_with_no_faults(smoke_config):
    c = smoke_config
    state = build.build_steps(c, _tasks(c), sharding.make_mesh()).state
    assert int(state.step) == 0 and state.ema is None
    assert int(state.faults["skipped"]) == 0 and int(state.faults["first_step"]) == -1
    params = state.params["model"]
    layout = state_lib.shared_layout(params)  # The trunk's tensors, no head.
    assert layout and not any(path[0].startswith("head_") for path, _ in layout)
    heads = sum(
        state_lib.param_count(v) for k, v in params.items() if k.startswith("head_")
    )
    assert sum(size for _, size in layout) + heads == state_lib.param_count(params)


def test_moving_averages_warm_up_then_decay():
    ema = {"w": np.zeros(2, np.float32)}
    new = {"w": np.ones(2, np.float32)}
    # min(decay, (1 + step) / (10 + step)): 0.1 at step 0, the decay later.
    got = state_lib.update_ema(ema, new, 0, decay=0.999)
    np.testing.assert_allclose(got["w"], 0.9, rtol=1e-6)
    got = state_lib.update_ema(ema, new, 10**6, decay=0.5)
    np.testing.assert_allclose(got["w"], 0.5, rtol=1e-6)
    assert state_lib.update_ema(None, new, 3, decay=0.9) is None


@pytest.mark.parametrize("ema", [False, True])
def test_evaluation_reads_the_averages_when_kept(smoke_config, ema):
    c = smoke_config
    c.train.ema_decay = 0.9 if ema else 0.0
    state = build.build_steps(c, _tasks(c), sharding.make_mesh()).state
    used = state_lib.eval_variables(state)
    if ema:
        assert used is state.ema
    else:  # The live parameters themselves, not a copy.
        assert used["params"] is state.params["model"]
