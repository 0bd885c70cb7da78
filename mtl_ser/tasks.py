"""Tasks are data: heads, losses, label encoding and metrics derive from this table.

A batch carries, per task, `labels[name]` ([B] int32 class ids or float32 values)
and `masks[name]` ([B] float32, 0 where the utterance has no label for the task).
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

CLASSIFICATION, REGRESSION = "classification", "regression"
GENDERS = ("female", "male")
DIMENSIONS = ("arousal", "valence", "dominance")


@dataclasses.dataclass(frozen=True)
class Task:
    """One prediction task.

    Attributes:
      name: task name, used in metric names (`train/loss/<name>`).
      kind: CLASSIFICATION or REGRESSION.
      label_key: key of `Utterance.labels` holding the target.
      classes: class names (classification only), in output order.
      loss: "xent" for classification; "mse" or "ccc" for regression.
    """

    name: str
    kind: str
    label_key: str
    classes: tuple[str, ...] = ()
    loss: str = "xent"

    @property
    def output_size(self) -> int:
        return len(self.classes) if self.kind == CLASSIFICATION else 1


def make_tasks(names: str, emotion_classes: str, regression_loss: str):
    """Builds the task tuple from the config's comma-separated fields.

    Args:
      names: e.g. "emotion,gender,arousal"; the first is the main task.
      emotion_classes: comma-separated emotion class names.
      regression_loss: "mse" or "ccc".

    Returns:
      A tuple of Task, in the given order.
    """
    tasks = []
    for name in _split(names):
        if name == "emotion":
            task = Task(name, CLASSIFICATION, name, tuple(_split(emotion_classes)))
        elif name == "gender":
            task = Task(name, CLASSIFICATION, name, GENDERS)
        elif name in DIMENSIONS:
            task = Task(name, REGRESSION, name, loss=regression_loss)
        else:
            known = ("emotion", "gender") + DIMENSIONS
            raise ValueError(f"tasks: unknown task {name!r}; choose from {known}")
        tasks.append(task)
    if not tasks:
        raise ValueError("tasks: empty; name at least one task, e.g. 'emotion'")
    if len({t.name for t in tasks}) != len(tasks):
        raise ValueError(f"tasks={names!r}: a task is named twice")
    return tuple(tasks)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def encode_labels(tasks: Sequence[Task], utterances) -> tuple[dict, dict]:
    """Turns utterance labels into per-task arrays and masks (host, numpy).

    Returns:
      (labels, masks): dicts task name -> [N] arrays; labels are int32 class ids
      (0 where missing) or float32 values (0 where missing); masks are float32.
    """
    labels, masks = {}, {}
    for task in tasks:
        raw = [u.labels.get(task.label_key) for u in utterances]
        if task.kind == CLASSIFICATION:
            index = {c: i for i, c in enumerate(task.classes)}
            ids = [index.get(v, -1) for v in raw]
            labels[task.name] = np.maximum(np.array(ids, np.int32), 0)
            masks[task.name] = (np.array(ids) >= 0).astype(np.float32)
        else:
            ok = [v is not None and np.isfinite(float(v)) for v in raw]
            values = [float(v) if k else 0.0 for v, k in zip(raw, ok, strict=True)]
            labels[task.name] = np.array(values, np.float32)
            masks[task.name] = np.array(ok, np.float32)
    return labels, masks


def task_loss(task: Task, outputs, labels, mask):
    """Masked mean loss of one task over the batch.

    Args:
      task: the task.
      outputs: [B, C] logits (classification) or [B, 1] predictions.
      labels: [B] int class ids or float targets.
      mask: [B] float, 1 where the label exists (and the example is real).

    Returns:
      A scalar; 0 when the mask is all zero.
    """
    denom = jnp.maximum(mask.sum(), 1.0)
    if task.kind == CLASSIFICATION:
        per_example = optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
        return (per_example * mask).sum() / denom
    pred = outputs[:, 0]
    if task.loss == "mse":
        return (jnp.square(pred - labels) * mask).sum() / denom
    if task.loss == "ccc":
        return 1.0 - masked_ccc(pred, labels, mask)
    raise ValueError(f"regression_loss={task.loss!r}: choose 'mse' or 'ccc'")


def masked_ccc(x, y, mask, eps=1e-8):
    """Lin's concordance correlation coefficient over the masked entries."""
    n = jnp.maximum(mask.sum(), 1.0)
    mx, my = (x * mask).sum() / n, (y * mask).sum() / n
    vx = (jnp.square(x - mx) * mask).sum() / n
    vy = (jnp.square(y - my) * mask).sum() / n
    cov = ((x - mx) * (y - my) * mask).sum() / n
    return 2.0 * cov / (vx + vy + jnp.square(mx - my) + eps)


def loss_vector(tasks: Sequence[Task], outputs, labels, masks):
    """Per-task losses stacked in task order: [T]."""
    return jnp.stack(
        [task_loss(t, outputs[t.name], labels[t.name], masks[t.name]) for t in tasks]
    )


def predictions(task: Task, outputs):
    """What evaluation aggregates per utterance: class probabilities or values."""
    if task.kind == CLASSIFICATION:
        return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)
    return outputs[:, 0]
