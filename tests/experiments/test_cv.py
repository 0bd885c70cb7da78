"""Cross-validation and the corpus's own split, end to end.

The folds themselves are tested in tests/data/test_splits.py.
"""

import json
import os

import numpy as np
import pytest

from mtl_ser.data import run_data
from mtl_ser.errors import ConfigError
from mtl_ser.experiments import modes
from tests.outputs.test_report import check_linked_images


def test_a_cv_fold_without_validation_trains_and_tests_on_the_last_state(
    smoke_config, tmp_path, capsys
):
    c = smoke_config
    c.split.protocol, c.split.folds, c.split.fold = "kfold", 3, 0
    c.split.cv_validation, c.train.evaluate_at = False, "last"
    workdir = str(tmp_path / "cv")
    modes.cross_validate(c, modes.Options(workdir=workdir))
    out = capsys.readouterr().out
    assert "test spk00,spk03, val (none)" in out
    assert "train 32, val 0, test 16 utterances" in out  # 4 speakers train.
    run = os.path.join(workdir, "fold00_fold0")
    with open(os.path.join(run, "results.json")) as f:
        results = json.load(f)
    assert "test/ua/emotion" in results["scalars"]
    assert not [k for k in results["scalars"] if k.startswith("val/")]
    assert results["best_step"] is None and set(results["confusion"]) == {"test"}
    lines = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert not [k for x in lines[:-1] for k in x if k.startswith("val/")]


def test_cv_mode_runs_every_fold_resumes_and_writes_the_table(
    smoke_config, tmp_path, capsys
):
    c = smoke_config
    c.split.protocol, c.split.folds = "kfold", 3
    workdir = str(tmp_path / "cv")
    c.split.fold = 1  # One fold per job: fold 1 alone, no table yet.
    modes.cross_validate(c, modes.Options(workdir=workdir))
    assert sorted(os.listdir(workdir)) == ["fold01_fold1"]
    assert "other folds remain" in capsys.readouterr().out
    c.split.fold = -1
    modes.cross_validate(c, modes.Options(workdir=workdir))
    out = capsys.readouterr().out
    assert "Fold 1 (fold1) is done" in out  # Not trained again.
    with open(os.path.join(workdir, "cv_results.json")) as f:
        summary = json.load(f)
    folds = summary["folds"]
    assert [f["test_speakers"] for f in folds] == [
        ["spk00", "spk03"],
        ["spk01", "spk04"],
        ["spk02", "spk05"],
    ]
    ua = [f["scalars"]["ua/emotion"] for f in folds]
    assert summary["mean"]["ua/emotion"] == pytest.approx(np.mean(ua))
    assert summary["std"]["ua/emotion"] == pytest.approx(np.std(ua))
    # Every utterance is tested exactly once: 6 speakers x 8 utterances.
    assert np.sum(summary["confusion"]["emotion"]) == 48
    assert np.sum(summary["confusion"]["gender"]) == 48
    # Pooled: recall of each class over all 48 test utterances, averaged.
    summed = np.asarray(summary["confusion"]["emotion"], np.float64)
    recall = np.diag(summed)[summed.sum(1) > 0] / summed.sum(1)[summed.sum(1) > 0]
    assert summary["pooled"]["ua/emotion"] == pytest.approx(recall.mean())
    assert summary["pooled"]["wa/emotion"] == pytest.approx(np.trace(summed) / 48)
    assert "wa/gender" in summary["pooled"]
    table = open(os.path.join(workdir, "cv.md")).read()
    assert table in out
    assert f"{np.mean(ua):.3f} ± {np.std(ua):.3f}" in table
    assert f"summed confusion): ua {recall.mean():.3f}, wa " in table
    assert "f1_anger" in table and "ccc/arousal" in table
    # cv.md's figures and each fold's report: every linked image is a PNG.
    names = check_linked_images(os.path.join(workdir, "cv.md"))
    summed = {"cv_ua.png", "cv_confusion_emotion.png", "cv_confusion_gender.png"}
    assert summed <= set(names)
    assert "cv_confusion_emotion_fold1.png" in names
    reports = [n for n in names if n.endswith("report.md")]
    assert len(reports) == 3
    for name in reports:
        assert "tsne.png" in check_linked_images(os.path.join(workdir, name))


def test_a_cv_protocol_is_refused_by_train_mode(smoke_config, tmp_path):
    smoke_config.split.protocol = "speaker"
    from mtl_ser.training import loop

    with pytest.raises(ConfigError, match="--mode=cv"):
        loop.train_and_evaluate(smoke_config, str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="split.fold=6: .* 0..5"):
        smoke_config.split.fold = 6
        modes.cross_validate(smoke_config, modes.Options(workdir=str(tmp_path / "cv")))


def test_a_manifest_with_a_split_column_trains_on_its_own_split(smoke_config, tmp_path):
    from mtl_ser import tasks as tasks_lib

    root = smoke_config.corpus.root
    split_of = {"spk04": "val", "spk05": "test"}
    with open(os.path.join(root, "manifest.csv")) as f:
        header, *rows = f.read().splitlines()
    lines = [header + ",split"] + [
        f"{r},{split_of.get(r.split(',')[2], 'train')}" for r in rows
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines).replace("wav/", f"{root}/wav/") + "\n")
    smoke_config.corpus.name, smoke_config.corpus.root = "manifest", str(manifest)
    smoke_config.split.protocol = "corpus"
    tasks = tasks_lib.make_tasks(
        "emotion,gender", "anger,happiness,neutral,sadness", "mse"
    )
    data = run_data.build_data(smoke_config, tasks, verbose=False)
    assert {k: sorted(set(v.speakers)) for k, v in data.splits.items()} == {
        "train": ["spk00", "spk01", "spk02", "spk03"],
        "val": ["spk04"],
        "test": ["spk05"],
    }
