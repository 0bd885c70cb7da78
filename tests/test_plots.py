"""Training curves: reading metrics.jsonl and drawing the report's figure."""

import json

import numpy as np
import pytest

from mtl_ser.outputs import plots


def _write(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_read_metrics_sorts_steps_and_keeps_the_last_relogged_value(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(
        path,
        [
            {"step": 2, "train/loss/emotion": 1.0},
            {"step": 4, "train/loss/emotion": 0.5, "val/ua/emotion": 0.4},
            # Resumed from the checkpoint at step 2: step 4 is logged again.
            {"step": 4, "train/loss/emotion": 0.6},
            {"step": 3, "train/loss/emotion": 0.8},
        ],
    )
    series = plots.read_metrics(str(path))
    steps, values = series["train/loss/emotion"]
    np.testing.assert_array_equal(steps, [2, 3, 4])
    np.testing.assert_allclose(values, [1.0, 0.8, 0.6])
    assert series["val/ua/emotion"][0].tolist() == [4]


def test_read_metrics_names_the_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": \n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        plots.read_metrics(str(path))


@pytest.mark.parametrize("gradient_method", [False, True])
def test_training_curves_writes_a_png(tmp_path, gradient_method):
    steps = np.arange(10, 110, 10)
    series = {
        "train/loss/emotion": (steps, np.linspace(2.0, 0.5, 10)),
        "train/loss/gender": (steps, np.linspace(0.7, 0.1, 10)),
        "train/weight/emotion": (steps, np.full(10, 0.8)),
        "train/weight/gender": (steps, np.full(10, 1.2)),
    }
    if gradient_method:
        series["train/grad_cos/emotion-gender"] = (steps, np.linspace(-0.2, 0.3, 10))
    path = plots.training_curves(series, ["emotion", "gender"], str(tmp_path / "c.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_embeds_the_curves_of_the_run(tmp_path, smoke_config):
    from mtl_ser.outputs import report

    smoke_config.tasks = "emotion,gender"
    _write(
        tmp_path / "metrics.jsonl",
        [
            {"step": s, "train/loss/emotion": 2.0 / s, "train/weight/emotion": 1.0}
            for s in (1, 2, 3)
        ],
    )
    results = {
        "num_params": 10,
        "step": 3,
        "best_step": 3,
        "scalars": {"test/ua/emotion": 0.5},
        "confusion": {"test": {"emotion": [[1, 0], [0, 1]]}},
        "classes": {"emotion": ["a", "b"]},
    }
    path = report.write_report(str(tmp_path), smoke_config, results)
    text = open(path).read()
    assert "![Training curves](curves.png)" in text
    assert "| test | emotion | ua | 0.5000 |" in text
    assert (tmp_path / "curves.png").stat().st_size > 1000
