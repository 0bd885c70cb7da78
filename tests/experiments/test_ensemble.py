"""Ensembles of runs and of cross-validations (--mode=ensemble)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tests
from mtl_ser.experiments import cli, ensemble, modes
from mtl_ser.training import evaluate, loop, metrics
from tests.outputs.test_report import check_linked_images


@pytest.fixture(scope="module")
def two_runs(corpus_root, tmp_path_factory):
    """Two smoke runs of the same config with seeds 0 and 1."""
    from configs import synthetic

    root = tmp_path_factory.mktemp("members")
    dirs = []
    for seed in (0, 1):
        config = synthetic.get_config("smoke")
        config.corpus.root = corpus_root
        config.features.cache_dir = os.path.join(corpus_root, "cache")
        config.report.figures = False
        config.seed = seed
        dirs.append(str(root / f"seed{seed}"))
        loop.train_and_evaluate(config, dirs[-1])
    return dirs


def _results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def test_a_run_saves_the_predictions_its_results_were_scored_on(two_runs):
    for run_dir in two_runs:
        saved = evaluate.read_predictions(os.path.join(run_dir, evaluate.PREDICTIONS))
        tasks = ensemble.run_tasks(run_dir)
        names = [t.name for t in tasks]
        assert names == ["emotion", "gender", "arousal", "valence", "dominance"]
        assert len(saved["test"]["uids"]) == 16  # Two test speakers x 8.
        probs = saved["test"]["emotion"]["pred"]
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        rescored = ensemble.scored(saved, tasks)
        assert rescored["scalars"] == pytest.approx(_results(run_dir)["scalars"])


def test_the_ensemble_scores_the_mean_of_the_members_predictions(two_runs, tmp_path):
    out = str(tmp_path / "ens")
    got = ensemble.ensemble(two_runs, out)
    assert got["kind"] == "run"
    results = got["results"]
    assert _results(out)["scalars"] == pytest.approx(results["scalars"])
    members = [
        evaluate.read_predictions(os.path.join(d, evaluate.PREDICTIONS))
        for d in two_runs
    ]
    test = [m["test"] for m in members]
    probs = (test[0]["emotion"]["pred"] + test[1]["emotion"]["pred"]) / 2
    classes = ("anger", "happiness", "neutral", "sadness")
    want = metrics.classification_metrics(
        test[0]["emotion"]["label"], probs.argmax(-1), classes
    )
    assert results["scalars"]["test/ua/emotion"] == pytest.approx(want["ua"])
    np.testing.assert_array_equal(
        results["confusion"]["test"]["emotion"], want["confusion"]
    )
    mask = test[0]["arousal"]["mask"] > 0
    values = (test[0]["arousal"]["pred"] + test[1]["arousal"]["pred"]) / 2
    ccc = metrics.regression_metrics(test[0]["arousal"]["label"][mask], values[mask])
    assert results["scalars"]["test/ccc/arousal"] == pytest.approx(ccc["ccc"])
    # The ensemble's own predictions file is the mean, so it can be a member.
    mine = evaluate.read_predictions(os.path.join(out, evaluate.PREDICTIONS))
    np.testing.assert_allclose(mine["test"]["emotion"]["pred"], probs)


def _fake_cv(path, fold_runs):
    """A finished CV workdir whose folds are copies of `fold_runs`."""
    rows = []
    for i, run_dir in enumerate(fold_runs):
        name = f"f{i}"
        folder = f"fold{i:02d}_{name}"
        shutil.copytree(run_dir, os.path.join(path, folder))
        val = ["spk06", "spk07"] if i == 0 else ["spk07", "spk06"]
        rows.append(
            {"fold": name, "dir": folder, "val_speakers": val, "test_speakers": ["x"]}
        )
    with open(os.path.join(path, "cv_results.json"), "w") as f:
        json.dump({"folds": rows}, f)
    return str(path)


def test_cross_validations_are_ensembled_fold_by_fold_from_the_cli(
    two_runs, tmp_path, capsys
):
    a, b = two_runs
    first = _fake_cv(tmp_path / "cv_a", [a, b])
    second = _fake_cv(tmp_path / "cv_b", [b, b])
    out = str(tmp_path / "ens")
    modes.ensemble_runs(None, modes.Options(workdir=out, inputs=(first, second)))
    printed = capsys.readouterr().out
    assert f"Tables: {out}/cv.md" in printed
    with open(os.path.join(out, "cv_results.json")) as f:
        summary = json.load(f)
    assert [r["fold"] for r in summary["folds"]] == ["f0", "f1"]
    assert summary["members"] == [os.path.abspath(first), os.path.abspath(second)]
    # Fold 0 is the mean of seeds 0 and 1; fold 1 averages seed 1 with itself.
    pair = ensemble.ensemble([a, b], str(tmp_path / "pair"))["results"]
    ua = [r["scalars"]["ua/emotion"] for r in summary["folds"]]
    assert ua[0] == pytest.approx(pair["scalars"]["test/ua/emotion"])
    assert ua[1] == pytest.approx(_results(b)["scalars"]["test/ua/emotion"])
    assert summary["mean"]["ua/emotion"] == pytest.approx(np.mean(ua))
    assert np.sum(summary["confusion"]["emotion"]) == 32
    # cv.md's links (figures, each fold's report) all lead somewhere.
    names = check_linked_images(os.path.join(out, "cv.md"))
    assert "fold00_f0/report.md" in names and "cv_confusion_emotion.png" in names
    fold_report = open(os.path.join(out, "fold00_f0", "report.md")).read()
    assert f"- `{os.path.abspath(first)}/fold00_f0`" in fold_report
    assert f"ua               {ua[0]:.4f}" in fold_report


def _error(config, out, members) -> str:
    """The one line launch.py would print, checking it exits with status 2."""
    options = modes.Options(workdir=out, inputs=tuple(members))
    with pytest.raises(Exception) as e:
        modes.ensemble_runs(config, options)
    status, line = cli.exit_status(e.value)
    assert status == cli.EXIT_CONFIG, e.value
    return line


def test_members_that_cannot_be_ensembled_fail_naming_the_member(two_runs, tmp_path):
    a, b = two_runs
    out = str(tmp_path / "ens")
    assert "at least two member runs" in _error(None, out, [a])
    assert "drop --config" in _error({"seed": 0}, out, [a, b])
    assert "/nope: no such run folder" in _error(None, out, [a, "/nope"])
    cv_dir = _fake_cv(tmp_path / "cv", [a, b])
    assert "mix cross-validation workdirs and single runs" in _error(
        None, out, [a, cv_dir]
    )
    # A member without predictions (made before they were saved).
    old = str(tmp_path / "old")
    shutil.copytree(b, old)
    os.remove(os.path.join(old, evaluate.PREDICTIONS))
    err = _error(None, out, [a, old])
    assert f"{old}/predictions.npz: not found" in err and "--mode=evaluate" in err
    # A member whose test utterances are in another order.
    shuffled = str(tmp_path / "shuffled")
    shutil.copytree(b, shuffled)
    path = os.path.join(shuffled, evaluate.PREDICTIONS)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["test/uids"] = arrays["test/uids"][::-1]
    np.savez(path, **arrays)
    err = _error(None, out, [a, shuffled])
    assert f"{shuffled}: its test utterances differ from {a}'s" in err
    # Another class list.
    other = str(tmp_path / "other")
    shutil.copytree(b, other)
    with open(os.path.join(other, "config.json")) as f:
        config = json.load(f)
    config["emotion_classes"] = "anger,sadness"
    with open(os.path.join(other, "config.json"), "w") as f:
        json.dump(config, f)
    assert f"{other}: its tasks or classes differ" in _error(None, out, [a, other])
    assert not os.path.exists(os.path.join(out, "results.json"))


def test_launch_ensemble_from_the_command_line(two_runs, tmp_path):
    out = str(tmp_path / "ens")
    root = tests.ROOT
    done = subprocess.run(
        [sys.executable, "launch.py", "--mode=ensemble", f"--workdir={out}", *two_runs],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"Results: {out}/results.json" in done.stdout
    want = ensemble.ensemble(two_runs, str(tmp_path / "again"))["results"]
    assert _results(out)["scalars"] == pytest.approx(want["scalars"])
