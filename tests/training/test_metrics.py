"""Tests for mtl_ser.training.metrics, against hand-worked examples."""

import math

import numpy as np
import pytest

from mtl_ser.training.metrics import (
    ccc,
    classification_metrics,
    confusion_matrix,
    confusion_metrics,
    regression_metrics,
)

NAMES = ("ang", "hap", "sad")


def _labels_from_confusion(cm):
    """Builds (y_true, y_pred) realising a confusion matrix, in shuffled order."""
    k = len(cm)
    counts = np.ravel(cm)
    y_true = np.repeat(np.repeat(np.arange(k), k), counts)
    y_pred = np.repeat(np.tile(np.arange(k), k), counts)
    order = np.random.default_rng(0).permutation(y_true.size)
    return y_true[order], y_pred[order]


# Worked example. Confusion matrix [true][pred]:
#            ang hap sad | true count
#      ang [  4,  0,  1]   5
#      hap [  2,  1,  0]   3
#      sad [  0,  1,  1]   2
#  pred count 6   2   2     10
# WA = (4 + 1 + 1) / 10 = 0.6
# recall    = 4/5, 1/3, 1/2   -> UA = macro_recall = (0.8 + 1/3 + 0.5) / 3 = 49/90
# precision = 4/6, 1/2, 1/2   -> macro_precision = (2/3 + 1/2 + 1/2) / 3 = 5/9
# F1 = 2TP / (2TP + FP + FN):
#   ang: 8 / (8 + 2 + 1) = 8/11; hap: 2 / (2 + 1 + 2) = 2/5; sad: 2 / (2 + 1 + 1) = 1/2
#   macro_f1 = (8/11 + 2/5 + 1/2) / 3 = (80 + 44 + 55) / 330 = 179/330
WORKED_CM = [[4, 0, 1], [2, 1, 0], [0, 1, 1]]


def test_confusion_matrix_worked_example():
    y_true, y_pred = _labels_from_confusion(WORKED_CM)
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, WORKED_CM)


def test_classification_metrics_worked_example():
    y_true, y_pred = _labels_from_confusion(WORKED_CM)
    m = classification_metrics(y_true, y_pred, NAMES)
    expected = {
        "wa": 0.6,
        "ua": 49 / 90,
        "macro_recall": 49 / 90,
        "macro_precision": 5 / 9,
        "macro_f1": 179 / 330,
        "recall/ang": 0.8, "recall/hap": 1 / 3, "recall/sad": 0.5,
        "precision/ang": 2 / 3, "precision/hap": 0.5, "precision/sad": 0.5,
        "f1/ang": 8 / 11, "f1/hap": 0.4, "f1/sad": 0.5,
    }  # fmt: skip
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(m[key], float)
    assert m["confusion"] == WORKED_CM
    assert all(type(v) is int for row in m["confusion"] for v in row)
    assert set(m) == set(expected) | {"confusion"}
    # The same numbers straight from the confusion matrix (pooled CV metrics).
    assert confusion_metrics(np.array(WORKED_CM), NAMES) == m


def test_ua_differs_from_wa_on_imbalanced_data():
    # 9 "ang", 1 "hap"; a model that always says "ang": WA 9/10, UA (1 + 0) / 2.
    y_true = np.array([0] * 9 + [1])
    y_pred = np.zeros(10, dtype=int)
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["wa"] == pytest.approx(0.9)
    assert m["ua"] == pytest.approx(0.5)
    # "sad" is absent from y_true: UA ignores it, macro_recall counts it as 0.
    assert m["macro_recall"] == pytest.approx(1 / 3)
    # F1: ang 2*9 / (18 + 1 + 0) = 18/19; hap 0; sad 0 (undefined -> 0).
    assert m["macro_f1"] == pytest.approx(18 / 19 / 3)
    assert m["precision/hap"] == 0.0 and m["f1/sad"] == 0.0


def test_perfect_prediction_scores_one():
    y = np.array([0, 1, 2, 2, 1, 0, 0])
    m = classification_metrics(y, y.copy(), NAMES)
    for key, value in m.items():
        if key != "confusion":
            assert value == 1.0, key
    np.testing.assert_array_equal(m["confusion"], np.diag([3, 2, 2]))


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([0, 1], [0]), ([0, 3], [0, 1]), ([-1, 0], [0, 0]), ([0.0, 1.0], [0, 1])],
)
def test_classification_rejects_bad_labels(y_true, y_pred):
    with pytest.raises(ValueError):
        classification_metrics(np.array(y_true), np.array(y_pred), NAMES)


def test_classification_rejects_empty():
    with pytest.raises(ValueError):
        classification_metrics(np.array([], int), np.array([], int), NAMES)


def test_ccc_worked_example():
    # x = [1, 2, 3, 4], y = [2, 2, 3, 5]; means 2.5 and 3.
    # deviations x: -1.5, -0.5, 0.5, 1.5 -> var_x = (2.25 + .25 + .25 + 2.25)/4 = 1.25
    # deviations y: -1, -1, 0, 2         -> var_y = (1 + 1 + 0 + 4) / 4 = 1.5
    # cov = (1.5 + 0.5 + 0 + 3) / 4 = 1.25
    # ccc = 2 * 1.25 / (1.25 + 1.5 + (2.5 - 3)^2) = 2.5 / 3 = 5/6
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 2.0, 3.0, 5.0])
    assert ccc(x, y) == pytest.approx(5 / 6, abs=1e-12)
    assert ccc(y, x) == pytest.approx(5 / 6, abs=1e-12)


def test_ccc_identity_scale_and_constant():
    x = np.random.default_rng(0).normal(size=50)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, 2 * x) < 1.0
    assert ccc(x, x + 1.0) < 1.0
    # Exactly -1 only for zero-mean data: a mean offset adds to the denominator.
    centred = x - x.mean()
    assert ccc(centred, -centred) == pytest.approx(-1.0)
    assert ccc(np.full(4, 2.0), np.full(4, 2.0)) == 0.0
    assert ccc(np.full(4, 2.0), np.full(4, 3.0)) == 0.0


def test_regression_metrics_worked_example():
    # errors y_pred - y_true = [1, 0, 0, 1]: MAE 2/4, RMSE sqrt(2/4).
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([2.0, 2.0, 3.0, 5.0])
    m = regression_metrics(y_true, y_pred)
    assert m == pytest.approx({"mae": 0.5, "rmse": math.sqrt(0.5), "ccc": 5 / 6})
    assert all(isinstance(v, float) for v in m.values())


def test_regression_rejects_mismatched_or_empty():
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(0), np.zeros(0))
