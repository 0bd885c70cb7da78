"""Paired comparisons of sweep variants, on run folders the tests write."""

import itertools
import json
import os

import numpy as np
import pytest

from mtl_ser.experiments import paired

METRIC = "test/ua/emotion"


def _write(path, scalars):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"scalars": scalars}, f)


def _single_run(root, name, seed, value):
    """A complete single-split run: (its overrides, its folder)."""
    overrides = {"weighting.name": name, "seed": seed}
    run_dir = os.path.join(str(root), f"{name},seed={seed}")
    _write(run_dir, {METRIC: value})
    return overrides, run_dir


def _cv_run(root, name, seed, values):
    """A complete CV run with one fold per value, test speakers s0, s1, ..."""
    overrides = {"weighting.name": name, "seed": seed}
    run_dir = os.path.join(str(root), f"{name},seed={seed}")
    folds = []
    for i, value in enumerate(values):
        fold = f"s{i}"
        folds.append({"fold": fold, "val_speakers": [], "test_speakers": [fold]})
        _write(os.path.join(run_dir, f"fold{i:02d}_{fold}"), {METRIC: value})
    with open(os.path.join(run_dir, "cv_results.json"), "w") as f:
        json.dump({"folds": folds}, f)
    return overrides, run_dir


def _exact_wilcoxon(diffs):
    """Two-sided exact signed-rank p by enumerating every sign pattern
    (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(diffs))) + 1
    observed = ranks[diffs > 0].sum()
    total = ranks.sum()
    stats = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=len(ranks))
    ]
    tail = min(observed, total - observed)
    extreme = sum(s <= tail or s >= total - tail for s in stats)
    return min(1.0, extreme / len(stats))


def test_seeds_are_the_units_of_single_split_runs(tmp_path):
    base = [0.80, 0.70, 0.90, 0.60, 0.75]
    gain = [0.05, -0.02, 0.10, 0.03, 0.07]
    runs = [_single_run(tmp_path, "equal", s, v) for s, v in enumerate(base)]
    runs += [
        _single_run(tmp_path, "upgrad", s, b + g)
        for s, (b, g) in enumerate(zip(base, gain, strict=True))
    ]
    (c,) = paired.paired(runs, [("name=upgrad", "name=equal")], METRIC)
    assert [u["unit"] for u in c["units"]] == [f"seed={s}" for s in range(5)]
    diffs = np.array([u["difference"] for u in c["units"]])
    np.testing.assert_allclose(diffs, gain, atol=1e-12)
    assert c["mean_difference"] == pytest.approx(np.mean(gain))
    assert c["std_difference"] == pytest.approx(np.std(gain))
    assert (c["wins"], c["losses"], c["ties"]) == (4, 1, 0)
    assert c["p_value"] == pytest.approx(_exact_wilcoxon(diffs))


def test_folds_are_the_units_of_cv_runs_and_their_seeds_are_averaged(tmp_path):
    runs = [
        _cv_run(tmp_path, "equal", 0, [0.5, 0.6, 0.7]),
        _cv_run(tmp_path, "equal", 1, [0.7, 0.6, 0.5]),
        _cv_run(tmp_path, "uncertainty", 0, [0.6, 0.7, 0.8]),
        _cv_run(tmp_path, "uncertainty", 1, [0.9, 0.6, 0.6]),
    ]
    (c,) = paired.paired(runs, [("name=uncertainty", "name=equal")], METRIC)
    by_unit = {u["unit"]: u for u in c["units"]}
    assert sorted(by_unit) == ["s0", "s1", "s2"]
    # Fold s0: the variant's seeds average 0.75, the baseline's 0.6.
    assert by_unit["s0"]["variant"] == pytest.approx(0.75)
    assert by_unit["s0"]["baseline"] == pytest.approx(0.6)
    assert by_unit["s1"]["difference"] == pytest.approx(0.05)
    assert by_unit["s2"]["difference"] == pytest.approx(0.1)
    assert (c["wins"], c["losses"], c["ties"]) == (3, 0, 0)
    # Three units, all positive: the smallest exact p, 2 / 2**3.
    assert c["p_value"] == pytest.approx(0.25)


def test_only_shared_models_are_compared_and_none_in_common_is_an_error(tmp_path):
    runs = [
        _single_run(tmp_path, "equal", 0, 0.8),
        _single_run(tmp_path, "equal", 1, 0.7),
        _single_run(tmp_path, "dwa", 1, 0.75),
        _single_run(tmp_path, "dwa", 2, 0.9),
        _single_run(tmp_path, "rlw", 3, 0.9),
    ]
    (c,) = paired.paired(runs, [("name=dwa", "name=equal")], METRIC)
    assert [u["unit"] for u in c["units"]] == ["seed=1"]
    assert c["p_value"] is None  # One unit: no test.
    with pytest.raises(ValueError, match="name=rlw vs name=equal: no models"):
        paired.paired(runs, [("name=rlw", "name=equal")], METRIC)


def test_markdown_gives_each_unit_and_the_test(tmp_path):
    runs = [_single_run(tmp_path, "equal", s, 0.5) for s in range(2)]
    runs += [_single_run(tmp_path, "famo", s, 0.5) for s in range(2)]
    comparisons = paired.paired(runs, [("name=famo", "name=equal")], METRIC)
    text = paired.markdown(comparisons)
    assert "| seed=0 | 0.5000 | 0.5000 | +0.0000 |" in text
    # Every difference 0: ties, and no p-value.
    assert "equal on 2 of 2; Wilcoxon signed-rank p = n/a." in text
