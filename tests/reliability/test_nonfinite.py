"""Guarantee 4: a non-finite loss never reaches a checkpoint.

The fault comes from the outside, as bad data would: `_poison` gives one
training step's batch NaN labels for one task, so that task's loss is NaN at
that step and only there."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from mtl_ser.data import batches
from mtl_ser.training import experiment, faults, loop, sharding


def _poison(monkeypatch, task: str, step: int) -> None:
    """Training batch `step` (1-based) gets NaN labels, unmasked, for `task`
    (a regression task), as bad data would: that task's loss is NaN at that
    step, wherever the run resumes from (batches.TrainBatches.map)."""
    clean = batches.TrainBatches.map

    def poisoned(self, b):
        batch = clean(self, b)
        if int(b) == step - 1:
            labels = batch["labels"][task]
            batch["labels"][task] = np.full(labels.shape, np.nan, labels.dtype)
        return batch

    monkeypatch.setattr(batches.TrainBatches, "map", poisoned)


def _states(config, num_steps):
    """Host copies of the state before and after each of `num_steps` steps."""
    mesh = sharding.make_mesh(jax.devices()[:1])
    exp = experiment.Experiment(config, mesh=mesh, verbose=False)
    it = exp.train_iterator()
    state = exp.state
    states = [jax.device_get(state)]
    for _ in range(num_steps):
        batch = sharding.from_process_local(next(it), exp.mesh)
        state, _ = exp.train_fn(state, batch, exp.store)
        states.append(jax.device_get(state))
    return states


def _learned(state):
    return (state.params, state.opt_state, state.weighting_state, state.batch_stats)


def _changed(a, b) -> bool:
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return any(not np.array_equal(x, y) for x, y in leaves)


def test_skip_policy_leaves_the_state_untouched_by_a_nan_step(
    smoke_config, monkeypatch
):
    c = smoke_config
    c.weighting.name = "mgda"  # The NaN also flows through the min-norm solver.
    c.train.on_nonfinite = "skip"
    _poison(monkeypatch, "valence", step=2)
    s = _states(c, 3)
    chex.assert_trees_all_equal(_learned(s[2]), _learned(s[1]))
    assert _changed(_learned(s[1]), _learned(s[0]))
    assert _changed(_learned(s[3]), _learned(s[2]))  # Training goes on.
    assert [int(x.step) for x in s] == [0, 1, 2, 3]
    record = s[3].faults
    assert int(record["skipped"]) == 1 and int(record["first_step"]) == 2
    names = c.tasks.split(",")
    losses = dict(zip(names, record["first_losses"], strict=True))
    assert np.isnan(losses.pop("valence"))
    assert all(np.isfinite(x) for x in losses.values())
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(s[3].params))


def test_stop_policy_freezes_the_state_at_the_last_finite_step(
    smoke_config, monkeypatch
):
    c = smoke_config
    _poison(monkeypatch, "arousal", step=2)
    s = _states(c, 3)
    chex.assert_trees_all_equal(_learned(s[3]), _learned(s[1]))
    assert int(s[3].faults["skipped"]) == 1  # Step 3 was finite, not applied.
    assert int(s[3].faults["first_step"]) == 2


def _steps_saved(folder):
    return sorted(int(x) for x in os.listdir(folder) if x.isdigit())


def test_nan_stops_the_run_with_a_diagnostic_and_resume_goes_on(
    smoke_config, tmp_path, capsys, monkeypatch
):
    c = smoke_config
    c.train.num_steps, c.weighting.name = 6, "uncertainty"
    _poison(monkeypatch, "arousal", step=3)
    workdir = str(tmp_path / "run")
    with pytest.raises(faults.NonFiniteError, match=r"step 3: .*task\(s\) arousal"):
        loop.train_and_evaluate(c, workdir)
    # Steps 2 and 4 are checkpoint and eval steps: only step 2 was saved.
    assert _steps_saved(os.path.join(workdir, "checkpoints")) == [2]
    assert _steps_saved(os.path.join(workdir, "best")) == [2]
    with open(os.path.join(workdir, "nonfinite_step3.json")) as f:
        record = json.load(f)
    assert record["step"] == 3 and record["losses"]["arousal"] == "nan"
    assert isinstance(record["losses"]["emotion"], float)
    # The batch listed is the one the third step was fed.
    exp = experiment.Experiment(c, verbose=False)
    it = exp.train_iterator()
    third = [next(it) for _ in range(3)][-1]
    train_uids = exp.data.splits["train"].uids
    assert record["batch_uids"] == [train_uids[i] for i in third["utt"]]
    log_var = record["weighting_params"]["log_var"]  # As after step 2.
    assert len(log_var) == len(c.tasks.split(",")) and -0.5 < log_var[0] < 0

    monkeypatch.undo()  # The bad data fixed, the same workdir resumes.
    capsys.readouterr()
    results = loop.train_and_evaluate(c, workdir)
    assert "Resumed from step 2" in capsys.readouterr().out
    assert results["step"] == 6 and results["skipped_steps"] == 0


def test_skip_policy_counts_skips(smoke_config, tmp_path, monkeypatch):
    c = smoke_config
    c.train.on_nonfinite = "skip"
    _poison(monkeypatch, "arousal", step=1)
    results = loop.train_and_evaluate(c, str(tmp_path / "skip"))
    assert results["skipped_steps"] == 1
    assert np.isfinite(results["scalars"]["test/ua/emotion"])
    lines = [json.loads(x) for x in open(tmp_path / "skip" / "metrics.jsonl")]
    skips = [x["train/skipped_steps"] for x in lines if "train/loss/total" in x]
    assert skips == [1, 1]  # Logged at steps 2 and 4.


def _record(skipped, first_step):
    return {
        "skipped": np.int32(skipped),
        "first_step": np.int32(first_step),
        "first_losses": np.array([1.0, np.nan], np.float32),
        "first_grad_norm": np.float32(np.nan),
    }


def test_skips_beyond_the_limit_stop_the_run():
    def describe():
        return "diag.json", "loss of task(s) b"

    check = dict(policy="skip", max_skipped=2, describe=describe)
    assert faults.check(_record(0, -1), **check) == 0
    assert faults.check(_record(2, 5), **check) == 2
    with pytest.raises(faults.NonFiniteError, match=r"step 5: .*\(3 non-finite"):
        faults.check(_record(3, 5), **check)
    with pytest.raises(faults.NonFiniteError, match=r"step 5: .* b; .*diag.json"):
        faults.check(_record(1, 5), policy="stop", max_skipped=2, describe=describe)
    assert faults.what_went_wrong(_record(1, 5), ["a", "b"]) == "loss of task(s) b"
