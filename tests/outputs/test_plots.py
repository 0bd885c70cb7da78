"""Training curves: reading metrics.jsonl and drawing the report's figure."""

import json

import numpy as np
import pytest

from mtl_ser.outputs import plots
from tests.outputs.test_report import png_size


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
@pytest.mark.parametrize("full_log", [False, True])
def test_training_curves_writes_a_png(tmp_path, gradient_method, full_log):
    steps = np.arange(10, 110, 10)
    series = {
        "train/loss/emotion": (steps, np.linspace(2.0, 0.5, 10)),
        "train/loss/gender": (steps, np.linspace(0.7, 0.1, 10)),
        "train/weight/emotion": (steps, np.full(10, 0.8)),
        "train/weight/gender": (steps, np.full(10, 1.2)),
    }
    if gradient_method:
        series["train/grad_cos/emotion-gender"] = (steps, np.linspace(-0.2, 0.3, 10))
    if full_log:  # What a run logs besides: validation, learning rate, speed.
        series["val/loss/emotion"] = (steps[4::5], np.array([1.3, 1.1]))
        series["train/lr"] = (steps, np.linspace(1e-4, 0.0, 10))
        series["train/samples_per_sec"] = (steps, np.full(10, 250.0))
    path = plots.training_curves(series, ["emotion", "gender"], str(tmp_path / "c.png"))
    width, height = png_size(path)
    # Panels: losses, weights (+ cosines) (+ learning rate, throughput).
    panels = 2 + gradient_method + 2 * full_log
    columns = 2 if panels in (2, 4) else 3
    assert (width, height) == (
        110 * 5 * columns,
        int(110 * 3.6 * -(-panels // columns)),
    )


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero():
    matrix = [[3, 1, 0], [0, 0, 0], [2, 2, 4]]
    np.testing.assert_allclose(
        plots.row_normalised(matrix), [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]]
    )


def test_confusion_tsne_gradcam_and_fold_figures_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        plots.confusion([[3, 1], [0, 4]], ["a", "b"], str(tmp_path / "c.png")),
        plots.tsne(
            rng.normal(size=(6, 2)),
            [("by class", np.array(list("aabbcc"))), ("by speaker", np.full(6, "s"))],
            str(tmp_path / "t.png"),
        ),
        plots.gradcam(
            rng.normal(size=(2, 64, 40)),
            rng.uniform(size=(2, 64, 40)),
            ["one", "two"],
            str(tmp_path / "g.png"),
            frame_seconds=0.01,
        ),
        plots.fold_bars(
            ["f0", "f1", "f2"], [0.5, 0.6, 0.7], str(tmp_path / "b.png"), metric="UA"
        ),
    ]
    for path in paths:
        assert min(png_size(path)) > 100


def test_tsne_points_clips_the_perplexity_and_is_reproducible():
    embedding = np.random.default_rng(0).normal(size=(5, 16))
    # 5 points: the perplexity of 30 must come down below 5 for TSNE to run.
    first = plots.tsne_points(embedding, 30.0, seed=0)
    assert first.shape == (5, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(plots.tsne_points(embedding, 30.0, seed=0), first)
    same = np.zeros((4, 8))  # All points equal: no PCA initialisation.
    assert np.isfinite(plots.tsne_points(same, 30.0, seed=0)).all()
    with pytest.raises(ValueError, match="at least 3"):
        plots.tsne_points(embedding[:2], 30.0, seed=0)


def test_single_task_curves_have_no_weights_panel(tmp_path):
    steps = np.arange(10, 110, 10)
    series = {
        "train/loss/emotion": (steps, np.linspace(2.0, 0.5, 10)),
        "train/weight/emotion": (steps, np.ones(10)),  # Logged, not drawn.
        "train/lr": (steps, np.linspace(1e-4, 0.0, 10)),
    }
    path = plots.training_curves(series, ["emotion"], str(tmp_path / "c.png"))
    assert png_size(path) == (110 * 5 * 2, int(110 * 3.6))  # Losses, lr.
    path = plots.training_curves(
        {"train/loss/emotion": series["train/loss/emotion"]},
        ["emotion"],
        str(tmp_path / "one.png"),
    )
    assert png_size(path) == (110 * 5, int(110 * 3.6))


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
    # Uncertainty weighting (the smoke config's): why the total can be negative.
    assert "the weight the method gave each task" in text
    assert "can be negative" in text
    smoke_config.tasks = "emotion"  # Single task: no weights, no such total.
    text = open(report.write_report(str(tmp_path), smoke_config, results)).read()
    assert "weight the method" not in text and "can be negative" not in text
