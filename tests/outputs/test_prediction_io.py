"""outputs.prediction_io: the audio files that prediction inputs name, and the
prediction tables it writes.

Prediction of the files, through a trained run and launch.py, is tested in
tests/outputs/test_predict.py.
"""

import csv
import json
import os
import types

import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.outputs import prediction_io


def test_manifests_list_paths_relative_to_their_folder(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.csv").write_text(
        "Path,emotion\nwav/x.wav,anger\n\n../y.wav,\n"
    )
    (tmp_path / "lists" / "b.jsonl").write_text(
        '{"path": "x.wav"}\n\n{"PATH": "/abs/z.wav", "speaker": 3}\n'
    )
    lists = str(tmp_path / "lists")
    assert prediction_io.read_manifest(f"{lists}/a.csv") == [
        f"{lists}/wav/x.wav",
        str(tmp_path / "y.wav"),
    ]
    assert prediction_io.read_manifest(f"{lists}/b.jsonl") == [
        f"{lists}/x.wav",
        "/abs/z.wav",
    ]
    (tmp_path / "lists" / "c.csv").write_text("file,emotion\nx.wav,anger\n")
    with pytest.raises(
        prediction_io.InputError, match=r"c\.csv, line 1: no `path` column"
    ):
        prediction_io.read_manifest(f"{lists}/c.csv")
    (tmp_path / "lists" / "d.jsonl").write_text('{"path": "x.wav"}\n{"path": ""}\n')
    with pytest.raises(prediction_io.InputError, match=r"d\.jsonl, line 2: path=''"):
        prediction_io.read_manifest(f"{lists}/d.jsonl")
    with pytest.raises(prediction_io.InputError, match="e.csv: manifest not found"):
        prediction_io.collect_inputs([f"{lists}/e.csv"])


def test_collect_takes_speakers_from_the_manifest_or_the_folder(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "lists"))
    with open(os.path.join(root, "lists", "m.csv"), "w") as f:
        f.write("path,speaker\nwav/a.wav,s1\nwav/b.wav, \n")
    with open(os.path.join(root, "lists", "n.jsonl"), "w") as f:
        f.write('{"path": "c.wav", "speaker": 3}\n')
    for name in ("folder/one.WAV", "folder/x/two.flac", "folder/notes.txt", "a.wav"):
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        open(os.path.join(root, name), "w").close()
    os.makedirs(os.path.join(root, "empty"))
    names = ["lists/m.csv", "lists/n.jsonl", "folder", "a.wav", "empty"]
    inputs = [os.path.join(root, name) for name in names]
    paths, speakers, skipped = prediction_io.collect(inputs, "manifest")
    assert paths == [
        os.path.join(root, "lists", "wav", "a.wav"),
        os.path.join(root, "lists", "wav", "b.wav"),
        os.path.join(root, "lists", "c.wav"),
        os.path.join(root, "folder", "one.WAV"),
        os.path.join(root, "folder", "x", "two.flac"),
        os.path.join(root, "a.wav"),
    ]
    assert speakers == ["s1", None, "3", None, None, None]
    assert [p for p, _ in skipped] == [os.path.join(root, "empty")]
    assert skipped[0][1].startswith("folder holds no audio file")
    assert prediction_io.collect_inputs(inputs) == (paths, skipped)
    by_folder = prediction_io.collect(inputs, "folder")
    assert by_folder == (paths, [os.path.dirname(p) for p in paths], skipped)
    with pytest.raises(ValueError, match="speakers='speaker'"):
        prediction_io.collect(inputs, "speaker")
    with pytest.raises(prediction_io.InputError, match="gone.wav: no such file"):
        prediction_io.collect([os.path.join(root, "gone.wav")])


def test_write_predictions_writes_the_tables_and_removes_a_stale_skipped_tsv(
    tmp_path,
):
    tasks = tasks_lib.make_tasks("emotion,arousal", "anger,sadness", "mse")
    run = str(tmp_path / "run")
    predictor = types.SimpleNamespace(tasks=tasks, checkpoint=("best", 7), workdir=run)
    rows = [
        {
            "path": f"/in/{i}.wav",
            "emotion": {
                "class": "anger",
                "probabilities": {"sadness": 0.5 - i / 4, "anger": 0.5 + i / 4},
            },
            "arousal": {"value": 1.5 + i},
            "statistics": "training split",
            "warning": "short" * i,
        }
        for i in range(2)
    ]
    skipped = [("/in/gone.wav", "file not found"), ("/in/x.wav", "bad\tfile\n")]
    out = str(tmp_path / "out")
    written = prediction_io.write_predictions(out, predictor, rows, skipped)
    names = ["predictions.csv", "predictions.json", "skipped.tsv"]
    assert written == [os.path.join(out, name) for name in names]
    with open(written[0], newline="") as f:
        table = list(csv.reader(f))
    header = ["path", "emotion", "emotion_p_anger", "emotion_p_sadness", "arousal"]
    assert table[0] == [*header, "statistics", "warning"]
    for row, record in zip(rows, table[1:], strict=True):
        probabilities = row["emotion"]["probabilities"]  # In the task's class order.
        assert record == [
            row["path"],
            "anger",
            str(probabilities["anger"]),
            str(probabilities["sadness"]),
            str(row["arousal"]["value"]),
            row["statistics"],
            row["warning"],
        ]
    with open(written[1]) as f:
        assert json.load(f) == {
            "workdir": os.path.abspath(run),
            "checkpoint": {"kind": "best", "step": 7},
            "predictions": rows,
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        }
    with open(written[2]) as f:  # One line each: whitespace in a reason folded.
        assert f.read().splitlines() == [
            "path\treason",
            "/in/gone.wav\tfile not found",
            "/in/x.wav\tbad file",
        ]
    # Predicting again without skipped files leaves no stale skipped.tsv.
    assert prediction_io.write_predictions(out, predictor, rows, []) == written[:2]
    assert not os.path.exists(written[2])
