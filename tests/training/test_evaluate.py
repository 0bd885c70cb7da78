"""Utterance-level evaluation: window predictions averaged per utterance, their
metrics and losses, the predictions file (training/evaluate.py)."""

import os
import types

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import run_data
from mtl_ser.training import checks, evaluate, sharding


def test_validation_loss_is_the_loss_of_the_utterance_predictions(smoke_config):
    tasks = tasks_lib.make_tasks("emotion,arousal", "a,b", "mse")
    split = types.SimpleNamespace(
        labels={"emotion": np.array([0, 1, 0]), "arousal": np.array([1.0, 3.5, 0])},
        masks={"emotion": np.array([1, 1, 0]), "arousal": np.array([1, 1, 0])},
    )
    predictions = {
        "emotion": np.array([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]]),
        "arousal": np.array([2.0, 3.0, 1.0]),  # In label units.
    }
    scalars, _ = evaluate.split_metrics("val", tasks, split, predictions)
    assert scalars["val/loss/emotion"] == pytest.approx(-np.log([0.8, 0.6]).mean())
    assert scalars["val/loss/arousal"] == pytest.approx((1.0 + 0.25) / 2)
    # A loss cannot choose the best checkpoint, which has the highest value.
    smoke_config.train.best_metric = "val/loss/emotion"
    with pytest.raises(checks.ConfigError, match="higher is better"):
        checks.validate_config(smoke_config)


def _tiny_split():
    """Three utterances of one mel band: 5, 9 and 3 frames (the last padded
    with its floor, -1, to a 4-frame window)."""
    lengths = np.array([5, 9, 3])
    frames = np.concatenate([[1, 2, 3, 4, 5], np.arange(10, 100, 10), [7, 8, 9]])
    store = types.SimpleNamespace(
        frames=frames.astype(np.float32)[:, None],
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        lengths=lengths,
        floors=np.array([0.0, 0.0, -1.0], np.float32),
    )
    split = run_data.SplitData(
        store, np.arange(3), ("a", "b", "c"), ("s", "s", "s"), {}, {}
    )
    return split, types.SimpleNamespace(mean=np.zeros(1), std=np.ones(1))


def test_predictions_are_the_mean_of_each_utterances_windows():
    split, data = _tiny_split()

    def predict_fn(state, x):  # A window's mean and its maximum frame.
        del state
        mean = jnp.mean(x, axis=(1, 2, 3))
        return {"mean": mean, "pair": jnp.stack([mean, jnp.max(x, (1, 2, 3))], -1)}

    # 4-frame windows every 2 frames, the last flush with the end: 2, 4 and 1
    # windows; 7 in batches of 4, the second padded with one empty window.
    mesh = sharding.make_mesh()
    got = evaluate.predict_split(
        predict_fn, None, split, data, mesh, crop=4, hop=2, batch_size=4
    )
    # Utterance 0: [1 2 3 4], [2 3 4 5]. Utterance 1: [10 .. 40], [30 .. 60],
    # [50 .. 80], [60 .. 90]. Utterance 2: [7 8 9 -1].
    means = [(2.5 + 3.5) / 2, (25 + 45 + 65 + 75) / 4, (7 + 8 + 9 - 1) / 4]
    maxima = [(4 + 5) / 2, (40 + 60 + 80 + 90) / 4, 9]
    np.testing.assert_allclose(got["mean"], means, rtol=1e-6)
    np.testing.assert_allclose(got["pair"], np.stack([means, maxima], 1), rtol=1e-6)
    assert got["pair"].dtype == np.float64


def test_predictions_file_reads_back_as_written(tmp_path):
    tasks = tasks_lib.make_tasks("emotion,arousal", "a,b", "mse")
    split = types.SimpleNamespace(
        uids=("u1", "u2", "u3"),
        labels={"emotion": np.array([0, 1, 0]), "arousal": np.array([1.0, 3.5, 0])},
        masks={"emotion": np.array([1, 1, 0]), "arousal": np.array([1, 1, 0])},
    )
    preds = {
        "emotion": np.array([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]]),
        "arousal": np.array([2.0, 3.0, 1.0]),
    }
    path = str(tmp_path / evaluate.PREDICTIONS)
    evaluate.write_predictions(
        path, tasks, {"val": (split, preds), "test": (split, preds)}
    )
    assert os.listdir(tmp_path) == [evaluate.PREDICTIONS]  # No temporary left.
    got = evaluate.read_predictions(path)
    assert set(got) == {"val", "test"}
    assert got["test"]["uids"].tolist() == list(split.uids)
    for task in tasks:
        saved = got["val"][task.name]
        np.testing.assert_array_equal(saved["pred"], preds[task.name])
        np.testing.assert_array_equal(saved["label"], split.labels[task.name])
        np.testing.assert_array_equal(saved["mask"], split.masks[task.name])
