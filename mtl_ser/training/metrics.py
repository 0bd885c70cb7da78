"""Evaluation metrics computed on the host with numpy (no JAX).

Classification follows speech-emotion-recognition conventions: WA (weighted
accuracy) is plain accuracy, UA (unweighted accuracy) is the mean per-class
recall, which is the headline number on imbalanced corpora. Regression uses
Lin's concordance correlation coefficient (CCC), the standard for arousal,
valence and dominance.
"""

from typing import Any, Dict, Sequence, Tuple

import numpy as np


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    """Counts (true, predicted) label pairs.

    Args:
        y_true: 1-D integer array of true class indices in [0, num_classes).
        y_pred: 1-D integer array of predicted class indices, same length.
        num_classes: number of classes.

    Returns:
        int64 array [num_classes, num_classes]; entry [t, p] counts samples of
        true class t predicted as p.

    Raises:
        ValueError: shapes differ, arrays are not 1-D, or a label is out of range.
    """
    y_true = _as_labels(y_true, num_classes, "y_true")
    y_pred = _as_labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch: {y_true.shape} vs {y_pred.shape}")
    pairs = y_true * num_classes + y_pred
    counts = np.bincount(pairs, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> Dict[str, Any]:
    """Computes accuracy, UA, and per-class and macro precision/recall/F1.

    Undefined ratios (a class never predicted, or never present) count as 0,
    like sklearn's zero_division=0. Macro averages run over all classes, except
    UA, which averages recall over the classes present in `y_true` only: a
    class absent from the test set says nothing about the model.

    Args:
        y_true: 1-D integer array of true class indices.
        y_pred: 1-D integer array of predicted class indices, same length.
        class_names: names of the classes, indexed by class index.

    Returns:
        Dict of Python floats: "wa", "ua", "macro_precision", "macro_recall",
        "macro_f1", "precision/<class>", "recall/<class>", "f1/<class>"; plus
        "confusion", a nested list [true][pred] of ints.

    Raises:
        ValueError: empty input, or as `confusion_matrix`.
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    return confusion_metrics(cm, class_names)


def confusion_metrics(cm: np.ndarray, class_names: Sequence[str]) -> Dict[str, Any]:
    """classification_metrics from a confusion matrix `[true][pred]` of counts
    (e.g. one summed over cross-validation folds)."""
    cm = np.asarray(cm, np.int64)
    total = cm.sum()
    if total == 0:
        raise ValueError("classification_metrics needs at least one sample")
    tp = np.diag(cm).astype(np.float64)
    true_counts = cm.sum(axis=1)
    pred_counts = cm.sum(axis=0)
    precision = _safe_divide(tp, pred_counts)
    recall = _safe_divide(tp, true_counts)
    # 2TP / (2TP + FP + FN) equals 2PR / (P + R) but has no 0/0 when TP == 0
    # and only one of P, R is undefined.
    f1 = _safe_divide(2 * tp, true_counts + pred_counts)
    metrics: Dict[str, Any] = {
        "wa": float(tp.sum() / total),
        "ua": float(recall[true_counts > 0].mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }
    for index, name in enumerate(class_names):
        metrics[f"precision/{name}"] = float(precision[index])
        metrics[f"recall/{name}"] = float(recall[index])
        metrics[f"f1/{name}"] = float(f1[index])
    metrics["confusion"] = cm.tolist()
    return metrics


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient, with population variances.

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2). Unlike
    Pearson's r it penalises bias and scale errors, so it is 1 only when y == x.

    Args:
        x: 1-D array of values.
        y: 1-D array of values, same length.

    Returns:
        CCC in [-1, 1]; 0 when both inputs are constant (undefined otherwise).
    """
    x, y = _as_pair(x, y)
    x_dev = x - x.mean()
    y_dev = y - y.mean()
    covariance = np.mean(x_dev * y_dev)
    denominator = np.mean(x_dev**2) + np.mean(y_dev**2) + (x.mean() - y.mean()) ** 2
    if denominator == 0:
        return 0.0
    return float(2 * covariance / denominator)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> Dict[str, float]:
    """Computes MAE, RMSE and CCC of predictions against targets.

    Args:
        y_true: 1-D array of target values.
        y_pred: 1-D array of predictions, same length.

    Returns:
        Dict of Python floats with keys "mae", "rmse", "ccc".
    """
    y_true, y_pred = _as_pair(y_true, y_pred)
    error = y_pred - y_true
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "ccc": ccc(y_true, y_pred),
    }


def _as_labels(labels: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """Validates a 1-D integer label array with values in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes})")
    return labels


def _as_pair(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Returns x, y as float64 1-D arrays of equal, non-zero length."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"need two 1-D arrays of equal shape: {x.shape}, {y.shape}")
    if x.size == 0:
        raise ValueError("need at least one value")
    return x, y


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise numerator / denominator, 0 where the denominator is 0."""
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)
