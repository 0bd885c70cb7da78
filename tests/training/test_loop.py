"""The train step and the loop: learning, sharding, tracing, outputs."""

import dataclasses
import json
import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mtl_ser.training import checkpointing, experiment, loop, sharding
from mtl_ser.training import state as state_lib
from mtl_ser.training import step as step_lib


def _steps(exp, num_steps, *, same_batch=False):
    """Runs `num_steps` train steps; returns (state, list of host metrics)."""
    it = exp.train_iterator()
    batch = next(it)
    state, history = exp.state, []
    for _ in range(num_steps):
        state, metrics = exp.train_fn(
            state, sharding.from_process_local(batch, exp.mesh), exp.store
        )
        history.append(jax.device_get(metrics))
        if not same_batch:
            batch = next(it)
    return state, history


@pytest.mark.parametrize("deltas", (0, 2))
def test_train_step_decreases_the_loss_on_a_tiny_batch(smoke_config, deltas):
    smoke_config.model.deltas = deltas  # 2: three input channels.
    smoke_config.weighting.name = "equal"
    smoke_config.model.dropout = 0.0
    smoke_config.optim.learning_rate = 1e-3
    smoke_config.optim.schedule = "constant"
    smoke_config.optim.warmup_steps = 0
    exp = experiment.Experiment(smoke_config, verbose=False)
    _, history = _steps(exp, 25, same_batch=True)
    first, last = history[0], history[-1]
    assert last["train/loss/total"] < 0.8 * first["train/loss/total"]
    assert last["train/loss/emotion"] < first["train/loss/emotion"]
    assert first["train/weight/emotion"] == 1.0
    conv1 = exp.state.params["model"]["trunk"]["conv1"]["kernel"]
    assert conv1.shape[2] == deltas + 1


def test_sharded_step_on_4_devices_equals_1_device(smoke_config):
    assert jax.device_count() == 4
    smoke_config.model.batch_norm = True  # Batch statistics must be global too.
    # SGD, not Adam: Adam turns float noise in the (zero) gradient of a conv bias
    # before BatchNorm into full-size steps, which would hide a real difference.
    smoke_config.optim.name, smoke_config.optim.warmup_steps = "sgd", 0
    smoke_config.optim.learning_rate = 0.01
    runs = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        exp = experiment.Experiment(smoke_config, mesh=mesh, verbose=False)
        state, history = _steps(exp, 3)
        leaf = jax.tree.leaves(state.params)[0]
        assert leaf.sharding.device_set == set(devices)
        runs.append((jax.device_get(state), history))
    (one, one_hist), (four, four_hist) = runs
    chex.assert_trees_all_close(one.params, four.params, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(one.batch_stats, four.batch_stats, rtol=1e-4)
    chex.assert_trees_all_close(one_hist, four_hist, rtol=1e-4, atol=1e-6)


def test_param_norm_fn_is_the_norm_of_the_model_parameters(smoke_config):
    exp = experiment.Experiment(smoke_config, verbose=False)
    state, _ = _steps(exp, 2)
    leaves = jax.tree.leaves(jax.device_get(state.params["model"]))
    want = np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in leaves))
    np.testing.assert_allclose(float(exp.param_norm_fn(state.params)), want, rtol=1e-5)


def test_update_ema_warms_its_decay_up():
    ema, live = {"w": np.zeros(3, np.float32)}, {"w": np.ones(3, np.float32)}
    # Step 0: d = min(0.99, 1/10); step 990: d = min(0.99, 991/1000) = 0.99.
    for step, d in ((0, 0.1), (990, 0.99)):
        got = state_lib.update_ema(ema, live, step, 0.99)["w"]
        np.testing.assert_allclose(got, np.full(3, 1.0 - d), rtol=1e-6)
    assert state_lib.update_ema(None, live, 5, 0.99) is None


def test_ema_averages_the_live_variables_and_evaluation_uses_it(smoke_config):
    smoke_config.model.batch_norm = True  # Its statistics are averaged too.
    smoke_config.train.ema_decay = 0.5
    smoke_config.optim.learning_rate = 1e-2  # Steps big enough to tell apart.
    exp = experiment.Experiment(smoke_config, verbose=False)
    live = state_lib.live_variables(jax.device_get(exp.state))
    want = jax.device_get(exp.state.ema)
    chex.assert_trees_all_equal(want, live)  # Starts at the initial weights.
    it, state = exp.train_iterator(), exp.state
    for step in range(3):
        batch = sharding.from_process_local(next(it), exp.mesh)
        state, _ = exp.train_fn(state, batch, exp.store)
        live = state_lib.live_variables(jax.device_get(state))
        d = min(0.5, (1 + step) / (10 + step))
        want = jax.tree.map(lambda e, v, d=d: d * e + (1 - d) * v, want, live)
    got = jax.device_get(state.ema)
    assert set(got) == {"params", "batch_stats"}
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)
    # Evaluation runs the averaged model, not the live one.
    db = next(it)["db"]
    x = ((db - exp.data.mean) / exp.data.std)[..., None]  # The model input.
    x = sharding.from_process_local(x, exp.mesh)
    predictions = jax.device_get(exp.eval_fn(state, x))["emotion"]
    averaged = exp.model.apply(state.ema, x, train=False)[0]["emotion"]
    current = exp.model.apply(live, x, train=False)[0]["emotion"]
    np.testing.assert_allclose(
        predictions, jax.nn.softmax(averaged), rtol=1e-5, atol=1e-6
    )
    # (The smoke model's logits are small; compare them, not probabilities.)
    assert np.abs(averaged - current).max() > 0.05 * np.abs(current).max()


def test_a_run_with_ema_checkpoints_and_re_evaluates_the_average(
    smoke_config, tmp_path
):
    smoke_config.train.ema_decay = 0.9
    workdir = str(tmp_path / "run")
    results = loop.train_and_evaluate(smoke_config, workdir)
    again = loop.evaluate_workdir(smoke_config, workdir)
    assert again["scalars"] == results["scalars"]


def test_checkpoints_from_before_ema_still_restore(smoke_config, tmp_path):
    exp = experiment.Experiment(smoke_config, verbose=False)
    state, _ = _steps(exp, 2)
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    del fields["ema"]
    ckpt = checkpointing.Checkpointer(
        str(tmp_path), keep=1, best_metric="val/ua/emotion"
    )
    old = checkpointing._StateBeforeEma(**fields)  # As older code wrote it.
    ckpt.best.save(
        2,
        args=ocp.args.Composite(state=ocp.args.StandardSave(old)),
        metrics={"val/ua/emotion": 0.5},
    )
    ckpt.wait()
    restored = ckpt.restore_best(exp.state)  # A fresh state: step 0.
    assert int(restored.step) == 2 and restored.ema is None
    chex.assert_trees_all_equal(
        jax.device_get(restored.params), jax.device_get(state.params)
    )
    # A run that keeps averages cannot take them from such a checkpoint.
    smoke_config.train.ema_decay = 0.9
    with_ema = experiment.Experiment(smoke_config, verbose=False).state
    with pytest.raises(ValueError, match="ema"):
        ckpt.restore_best(with_ema)
    ckpt.close()


def test_train_step_traces_once_per_run(smoke_config, tmp_path, monkeypatch):
    traced = chex.assert_max_traces(step_lib.train_step, n=1)
    monkeypatch.setattr(step_lib, "train_step", traced)
    smoke_config.train.num_steps = 5
    results = loop.train_and_evaluate(smoke_config, str(tmp_path / "run"))
    assert results["step"] == 5


def test_run_writes_metrics_results_and_checkpoints(smoke_config, tmp_path):
    workdir = str(tmp_path / "run")
    results = loop.train_and_evaluate(smoke_config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["scalars"] == results["scalars"]
    for name in ("test/ua/emotion", "val/wa/emotion", "test/ccc/arousal"):
        assert 0.0 <= abs(results["scalars"][name]) <= 1.0
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    weights = [x["train/weight/gender"] for x in lines if "train/weight/gender" in x]
    assert len(weights) == smoke_config.train.num_steps // smoke_config.train.log_every
    # The parameter norm is computed at the log steps only, from the state.
    norms = [x["train/param_norm"] for x in lines if "train/weight/gender" in x]
    assert len(norms) == len(weights) and len(set(norms)) == len(norms)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert os.listdir(os.path.join(workdir, "best"))
    assert len(results["confusion"]["test"]["emotion"]) == 4
    # --mode=evaluate on a finished workdir reproduces the final metrics.
    again = loop.evaluate_workdir(smoke_config, workdir)
    assert again["scalars"] == results["scalars"]
    assert again["best_step"] == results["best_step"]


def test_evaluate_at_last_scores_the_final_state_and_keeps_no_best(
    smoke_config, tmp_path
):
    from mtl_ser import Predictor
    from mtl_ser.outputs import report

    smoke_config.train.evaluate_at = "last"
    workdir = str(tmp_path / "run")
    results = loop.train_and_evaluate(smoke_config, workdir)
    assert results["best_step"] is None
    assert not os.listdir(os.path.join(workdir, "best"))
    # The final state is the last checkpoint: scoring it again gives the same.
    exp = experiment.Experiment(smoke_config, verbose=False)
    ckpt = checkpointing.Checkpointer(
        workdir, keep=2, best_metric=smoke_config.train.best_metric
    )
    assert ckpt.latest_step() == smoke_config.train.num_steps
    state = ckpt.restore_latest(exp.state, exp.train_iterator())
    ckpt.close()
    scalars, _ = exp.evaluate(state, "test", "test")
    assert scalars == {k: v for k, v in results["scalars"].items() if "test/" in k}
    assert Predictor(workdir, verbose=False).checkpoint == (
        "latest",
        smoke_config.train.num_steps,
    )
    text = open(report.write_report(workdir, smoke_config, results)).read()
    assert f"evaluated at the last step ({smoke_config.train.num_steps})" in text


def test_a_run_says_what_it_is_waiting_for(smoke_config, tmp_path, capfd, monkeypatch):
    """The feature cache's build and long evaluations show a bar with the time
    left; the first step says it waits for the compiler."""
    from mtl_ser.training import evaluate

    monkeypatch.setattr(evaluate, "PROGRESS_BATCHES", 0)  # Every evaluation.
    smoke_config.features.cache_dir = str(tmp_path / "cache")  # Built anew.
    assert smoke_config.train.progress_bar  # Smoke runs show it too.
    loop.train_and_evaluate(smoke_config, str(tmp_path / "run"))
    out, err = capfd.readouterr()
    assert "Compiling the train step" in out
    assert "48/48 [" in err  # The corpus's files, with elapsed and left times.
    assert "batch/s]" in err or "s/batch]" in err  # The final evaluation's.
    smoke_config.train.progress_bar = False
    loop.train_and_evaluate(smoke_config, str(tmp_path / "quiet"))
    assert "batch" not in capfd.readouterr().err
