"""Utterance-level evaluation: window predictions averaged per utterance.

Besides the metrics, each task gets `<split>/loss/<task>`, the loss of the
utterance-level predictions: the mean cross-entropy -log p(true class) of the
window-averaged probabilities for classification, the mean squared error in
label units for regression. It follows the training loss over the run (the
training curves draw both) but is not the same number: the training loss is
per window, on standardised regression targets, and may be 1 - CCC.
"""

import os

import jax
import numpy as np
import tqdm

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import pipeline
from mtl_ser.training import metrics as metrics_lib
from mtl_ser.training import sharding

# Evaluations longer than this many batches show a progress bar (when asked).
PROGRESS_BATCHES = 20


def windowing(data_cfg) -> dict:
    """predict_split's windowing keywords from the config's `data` section."""
    return {
        "crop": data_cfg.crop_frames,
        "hop": data_cfg.eval_hop_frames,
        "batch_size": data_cfg.eval_batch_size,
        "fixed": data_cfg.inputs == "fixed",
    }


def predict_split(
    predict_fn,
    state,
    split,
    data,
    mesh,
    *,
    crop,
    hop,
    batch_size,
    fixed=False,
    progress=False,
):
    """Mean window prediction per utterance of a split.

    Args:
      predict_fn: jitted eval_step(state, x) -> {task: [B, ...]} (replicated).
      state: the train state.
      split: a run_data.SplitData.
      data: the run_data.Data (normalisation).
      mesh: the device mesh.
      crop, hop, batch_size: evaluation windowing and global batch size.
      fixed: one centre window per utterance instead of windows covering it.
      progress: a bar of the batches done and the time left (process 0), for
        evaluations of more than PROGRESS_BATCHES batches.

    Returns:
      {task: [N, C] mean class probabilities or [N] mean values}.
    """
    sums, counts = {}, np.zeros(len(split), np.float64)
    windows = pipeline.eval_windows(split, crop, hop, fixed=fixed)
    num_batches = -(-len(windows) // batch_size)
    batches = tqdm.tqdm(
        pipeline.window_batches(split, data, windows, crop=crop, batch_size=batch_size),
        total=num_batches,
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=not progress
        or num_batches <= PROGRESS_BATCHES
        or jax.process_index() != 0,
    )
    for batch in batches:
        x = sharding.from_global(batch["x"], mesh)
        preds = jax.device_get(predict_fn(state, x))
        valid = batch["utt"] >= 0
        utt = batch["utt"][valid]
        np.add.at(counts, utt, 1.0)
        for name, p in preds.items():
            p = np.asarray(p, np.float64)
            if name not in sums:
                sums[name] = np.zeros((len(split),) + p.shape[1:], np.float64)
            np.add.at(sums[name], utt, p[valid])
    return {
        name: s / counts.reshape((-1,) + (1,) * (s.ndim - 1))
        for name, s in sums.items()
    }


def split_metrics(prefix: str, tasks, split, predictions) -> tuple[dict, dict]:
    """Metrics of utterance-level predictions against the split's labels.

    Returns:
      (scalars named `prefix/metric/task`, among them `prefix/loss/task` (see
      utterance_loss), confusion matrices by task name).
    """
    scalars, confusions = {}, {}
    for task in tasks:
        mask = split.masks[task.name] > 0
        y_true, pred = split.labels[task.name][mask], predictions[task.name][mask]
        if not mask.any():
            continue
        if task.kind == tasks_lib.CLASSIFICATION:
            m = metrics_lib.classification_metrics(
                y_true, pred.argmax(-1), task.classes
            )
            confusions[task.name] = m.pop("confusion")
        else:
            m = metrics_lib.regression_metrics(y_true, pred)
        m["loss"] = utterance_loss(task, y_true, pred)
        for key, value in m.items():
            scalars[f"{prefix}/{key.replace('/', '_')}/{task.name}"] = float(value)
    return scalars, confusions


# Probabilities are floored here before the log: a class given 0 costs 28 nats
# instead of an infinite mean.
_MIN_PROBABILITY = 1e-12


def utterance_loss(task, y_true: np.ndarray, pred: np.ndarray) -> float:
    """The loss of utterance-level predictions of one task.

    Args:
      task: the Task.
      y_true: [N] class ids or label values.
      pred: [N, C] window-averaged class probabilities, or [N] values in label
        units.

    Returns:
      The mean cross-entropy -log pred[n, y_true[n]] (classification) or the
      mean squared error (regression).
    """
    if task.kind == tasks_lib.CLASSIFICATION:
        p = np.take_along_axis(pred, np.asarray(y_true)[:, None], axis=1)[:, 0]
        return float(-np.mean(np.log(np.maximum(p, _MIN_PROBABILITY))))
    return float(np.mean(np.square(np.asarray(pred) - np.asarray(y_true))))


# Each run's utterance-level predictions of its chosen checkpoint, beside
# results.json (final evaluation); what `mtl_ser.experiments.ensemble` averages.
PREDICTIONS = "predictions.npz"


def write_predictions(path: str, tasks, named: dict) -> None:
    """Saves utterance-level predictions with their labels (process 0 only).

    Args:
      path: the .npz file, written atomically (temp + rename).
      tasks: the run's Tasks.
      named: split name -> (run_data.SplitData, predict_split's output in
        label units).

    The file holds, per split: `<split>/uids`, and per task
    `<split>/<task>/pred` ([N, C] probabilities or [N] values),
    `<split>/<task>/label` and `<split>/<task>/mask` (tasks.encode_labels).
    """
    if jax.process_index() != 0:
        return
    arrays = {}
    for name, (split, preds) in named.items():
        arrays[f"{name}/uids"] = np.asarray(split.uids, dtype=str)
        for task in tasks:
            arrays[f"{name}/{task.name}/pred"] = np.asarray(preds[task.name])
            arrays[f"{name}/{task.name}/label"] = np.asarray(split.labels[task.name])
            arrays[f"{name}/{task.name}/mask"] = np.asarray(split.masks[task.name])
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(path + ".tmp", path)


def read_predictions(path: str) -> dict:
    """write_predictions' file as {split: {"uids": [N], task: {"pred", "label",
    "mask"}}}."""
    out = {}
    with np.load(path) as f:
        for key in f.files:
            split, _, rest = key.partition("/")
            if rest == "uids":
                out.setdefault(split, {})["uids"] = f[key]
            else:
                task, _, field = rest.rpartition("/")
                out.setdefault(split, {}).setdefault(task, {})[field] = f[key]
    return out
