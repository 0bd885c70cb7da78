"""Prediction: a trained run on new audio, as its evaluation saw the test files."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import tests
from mtl_ser import Predictor
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import corpora, normalisation, run_data
from mtl_ser.outputs import predict, prediction_io
from mtl_ser.training import evaluate, loop
from mtl_ser.training import workdir as workdir_lib

ROOT = tests.ROOT


@pytest.fixture(scope="module")
def run(corpus_root, tmp_path_factory):
    """(config, workdir, results) of one smoke training run for the module."""
    from configs import synthetic

    config = synthetic.get_config("smoke")
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    workdir = str(tmp_path_factory.mktemp("predict") / "run")
    results = loop.train_and_evaluate(config, workdir)
    return config, workdir, results


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor(run[1], verbose=False)


@pytest.fixture(scope="module")
def test_files(run, predictor):
    """(test SplitData, its wav paths in split order)."""
    config = run[0]
    data = run_data.build_data(config, predictor.tasks, verbose=False)
    path_of = {u.uid: u.path for u in corpora.load_corpus(config.corpus)}
    split = data.splits["test"]
    return split, [path_of[uid] for uid in split.uids]


def _arrays(rows, tasks) -> dict:
    """predict_files' rows -> {task: [N, C] probabilities or [N] values}."""
    out = {}
    for task in tasks:
        if task.kind == tasks_lib.CLASSIFICATION:
            out[task.name] = np.array(
                [[r[task.name]["probabilities"][c] for c in task.classes] for r in rows]
            )
        else:
            out[task.name] = np.array([r[task.name]["value"] for r in rows])
    return out


def test_predictions_on_the_test_files_reproduce_the_test_metrics(
    run, predictor, test_files, monkeypatch
):
    _, _, results = run
    split, paths = test_files
    rows, skipped = predictor.predict_files(paths)
    assert skipped == [] and [r["path"] for r in rows] == paths
    assert predictor.checkpoint == ("best", results["best_step"])
    scalars, confusion = evaluate.split_metrics(
        "test", predictor.tasks, split, _arrays(rows, predictor.tasks)
    )
    expected = {k: v for k, v in results["scalars"].items() if k.startswith("test/")}
    # Exactly: the same windows, batches, compiled step and float64 averaging
    # as evaluation, so even the regression CCCs and losses match to the bit.
    assert scalars == expected
    assert {k: np.asarray(v).tolist() for k, v in confusion.items()} == {
        k: np.asarray(v).tolist() for k, v in results["confusion"]["test"].items()
    }
    for row in rows:
        probabilities = row["emotion"]["probabilities"]
        assert row["emotion"]["class"] == max(probabilities, key=probabilities.get)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert len({r["arousal"]["value"] for r in rows}) == len(rows)  # Per file.
    # Files taken 3 at a time (other batches, the last one padded) predict the
    # same to the bit: a window's outputs do not depend on its batch.
    monkeypatch.setattr(predict, "FILES_PER_CHUNK", 3)
    assert predictor.predict_files(paths) == (rows, [])


def test_predict_on_samples_equals_predict_files_and_resamples(
    predictor, test_files, tmp_path
):
    path = test_files[1][0]
    wave, rate = sf.read(path, dtype="float32")
    rows, _ = predictor.predict_files([path])
    mono = {
        k: v for k, v in rows[0].items() if k not in ("path", "statistics", "warning")
    }
    assert predictor.predict(wave, rate) == mono
    assert predictor.predict(np.stack([wave, wave], 1), rate) == mono  # Downmixed.
    # The same samples declared at 22.05 kHz: resampled as a 22.05 kHz file is.
    other = str(tmp_path / "22k.wav")
    sf.write(other, wave, 22_050, subtype="FLOAT")
    at_22k = predictor.predict(wave, 22_050)
    assert predictor.predict_files([other])[0][0] == {
        "path": other,
        **at_22k,
        "statistics": "training split",
        "warning": "",
    }
    assert at_22k != predictor.predict(wave, rate)


def test_unreadable_files_are_skipped_with_their_reason(
    predictor, test_files, tmp_path
):
    folder = tmp_path / "mixed"
    (folder / "deeper").mkdir(parents=True)
    shutil.copy(test_files[1][0], folder / "deeper" / "good.wav")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio\n")
    (folder / "notes.txt").write_text("ignored: not a .wav\n")
    paths, skipped = prediction_io.collect_inputs([str(folder)])
    assert skipped == []
    assert paths == [
        str(folder / "deeper" / "good.wav"),
        str(folder / "empty.wav"),
        str(folder / "text.wav"),
    ]
    paths.append(str(tmp_path / "gone.wav"))  # As a manifest may list it.
    rows, skipped = predictor.predict_files(paths)
    assert [r["path"] for r in rows] == [paths[0]]
    reasons = dict(skipped)
    assert list(reasons) == paths[1:]
    assert reasons[paths[1]] == "empty file (0 bytes)"
    assert reasons[paths[2]].startswith("unreadable or not an audio file")
    assert reasons[paths[3]] == "file not found"


def test_launch_predict_writes_csv_and_json(run, predictor, test_files, tmp_path):
    _, workdir, _ = run
    paths = test_files[1][:3]
    folder = tmp_path / "wavs"
    folder.mkdir()
    for p in paths[:2]:
        shutil.copy(p, folder)
    (folder / "broken.wav").write_text("not audio")
    (tmp_path / "m").mkdir()
    shutil.copy(paths[2], tmp_path / "m" / "third.wav")
    manifest = tmp_path / "m" / "list.csv"
    manifest.write_text("path\nthird.wav\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "launch.py", "--mode=predict", f"--workdir={workdir}"]
    cmd += [str(folder), str(manifest), f"--predict_out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Predicted 3 files, skipped 1 (best checkpoint" in proc.stdout
    with open(out / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    expected = [str(folder / os.path.basename(p)) for p in sorted(paths[:2])]
    assert [r["path"] for r in table] == expected + [str(tmp_path / "m/third.wav")]
    emotions = predictor.tasks[0].classes
    assert list(table[0]) == (
        ["path", "emotion"]
        + [f"emotion_p_{c}" for c in emotions]
        + ["gender", "gender_p_female", "gender_p_male"]
        + ["arousal", "valence", "dominance", "statistics", "warning"]
    )
    assert {row["statistics"] for row in table} == {"training split"}
    for row in table:
        p = np.array([float(row[f"emotion_p_{c}"]) for c in emotions])
        assert row["emotion"] == emotions[int(p.argmax())]
        assert float(row["arousal"]) > 0  # In label units (1..5), not standardised.
    with open(out / "predictions.json") as f:
        saved = json.load(f)
    assert saved["checkpoint"] == {"kind": "best", "step": predictor.checkpoint[1]}
    assert [r["path"] for r in saved["predictions"]] == [r["path"] for r in table]
    assert saved["skipped"][0]["path"] == str(folder / "broken.wav")
    with open(out / "skipped.tsv") as f:
        assert f.readline() == "path\treason\n"
        assert f.readline().startswith(f"{folder / 'broken.wav'}\tunreadable")


def test_launch_refuses_predict_without_inputs_and_others_without_config(run):
    launch = [sys.executable, "launch.py"]
    cases = [
        (
            [f"--workdir={run[1]}", "--mode=predict"],
            "Flag error: --mode=predict needs wav files, folders or manifests after "
            "the flags",
        ),
        (
            ["--workdir=/nonexistent/run"],  # --mode=train still needs --config.
            "Flag error: flag --config=None: Flag --config must have a value "
            "other than None.",
        ),
    ]
    for args, message in cases:
        proc = subprocess.run(
            launch + args, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and proc.stderr.strip() == message


def test_workdir_without_a_checkpoint_is_a_clear_error(run, tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    with pytest.raises(workdir_lib.WorkdirError, match=f"{empty}: no config.json"):
        Predictor(empty)
    untrained = str(tmp_path / "untrained")
    os.makedirs(untrained)
    shutil.copy(os.path.join(run[1], "config.json"), untrained)
    with pytest.raises(
        workdir_lib.WorkdirError, match=f"{untrained}: no checkpoint to predict with"
    ):
        Predictor(untrained)


def test_run_without_normalisation_file_predicts_identically(
    run, predictor, test_files, tmp_path, capsys
):
    _, workdir, _ = run
    old = str(tmp_path / "old_run")
    shutil.copytree(workdir, old)
    saved = normalisation.load(old)
    os.remove(os.path.join(old, normalisation.FILENAME))
    rebuilt = Predictor(old)
    assert "normalisation.json not found" in capsys.readouterr().out
    np.testing.assert_array_equal(rebuilt.statistics.mean, saved.mean)
    np.testing.assert_array_equal(rebuilt.statistics.std, saved.std)
    assert rebuilt.statistics.target_stats == saved.target_stats
    paths = test_files[1][:4]
    assert rebuilt.predict_files(paths) == predictor.predict_files(paths)


def test_folders_take_every_audio_format_and_short_clips_are_flagged(
    run, predictor, test_files, tmp_path
):
    wave, rate = sf.read(test_files[1][0], dtype="float32")
    folder = tmp_path / "formats"
    folder.mkdir()
    for name, fmt in (("a.FLAC", "FLAC"), ("b.ogg", "OGG"), ("c.Mp3", "MP3")):
        sf.write(folder / name, wave, rate, format=fmt)
    sf.write(folder / "short.wav", wave[: rate // 20], rate)  # 0.05 s.
    paths, skipped = prediction_io.collect_inputs([str(folder)])
    assert skipped == [] and [os.path.basename(p) for p in paths] == [
        "a.FLAC",
        "b.ogg",
        "c.Mp3",
        "short.wav",
    ]
    out = tmp_path / "out"
    cmd = [sys.executable, "launch.py", "--mode=predict", f"--workdir={run[1]}"]
    proc = subprocess.run(
        [*cmd, str(folder), f"--predict_out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Predicted 4 files, 1 shorter than one window (see 'warning')" in proc.stdout
    with open(out / "predictions.csv") as f:
        warnings = {
            os.path.basename(r["path"]): r["warning"] for r in csv.DictReader(f)
        }
    assert warnings["a.FLAC"] == warnings["b.ogg"] == warnings["c.Mp3"] == ""
    assert warnings["short.wav"].startswith("shorter than one window (0.0")


def test_predict_refuses_what_it_cannot_do_in_one_line(run, tmp_path):
    """Status 2, one line, nothing written: a named input that does not exist,
    nothing to predict, an output folder that cannot be written."""
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    good = tmp_path / "good.wav"
    sf.write(good, np.sin(np.arange(16_000) / 10).astype(np.float32), 16_000)
    cases = [
        ([str(tmp_path / "gone.wav")], "Input error: ", "gone.wav: no such file"),
        ([str(empty)], "Input error: nothing to predict: ", "holds no audio file"),
        ([str(broken)], "Input error: no file could be predicted: ", "broken.wav"),
        (
            [str(good), f"--predict_out={blocker}/out"],
            "Workdir error: --predict_out=",
            "not writable",
        ),
    ]
    cmd = [sys.executable, "launch.py", "--mode=predict", f"--workdir={run[1]}"]
    before = sorted(os.listdir(run[1]))
    for args, start, named in cases:
        proc = subprocess.run(
            [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]  # After the progress bar.
        assert last.startswith(start) and named in last, proc.stderr
    assert sorted(os.listdir(run[1])) == before  # No predictions folder made.
