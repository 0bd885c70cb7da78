"""Tests of the manifest corpus adapter."""

import json
import os
import re

import pytest

from mtl_ser.data.corpora import manifest, synthetic
from mtl_ser.data.corpora.base import CorpusError, Utterance
from mtl_ser.data.splits import cv_folds
from tests.data.corpora.common import RATE, manifest_rows, write_csv, write_wav


def _write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def _expected(root, outside):
    def wav(*parts):
        return os.path.join(root, "audio", *parts)

    return [
        Utterance(
            uid="audio/s1/a",
            path=wav("s1", "a.wav"),
            speaker="s1",
            group="ses1",
            gender="female",
            labels=dict(
                emotion="anger",
                gender="female",
                arousal=4.5,
                valence=1.5,
                split="train",
            ),
        ),
        Utterance(
            uid="audio/s1/b",
            path=wav("s1", "b.wav"),
            speaker="s1",
            group="ses1",
            gender="female",
            labels=dict(emotion="neutral", gender="female", split="val"),
        ),
        Utterance(
            uid="audio/s2/c",
            path=wav("s2", "c.wav"),
            speaker="s2",
            group="ses2",
            gender="male",
            labels=dict(
                emotion="sadness",
                gender="male",
                arousal=1.25,
                valence=2.0,
                dominance=3.0,
            ),
        ),
        Utterance(
            uid=os.path.splitext(outside)[0],
            path=outside,
            speaker="s3",
            group="",
            gender="",
            labels=dict(emotion="happiness", split="test"),
        ),
    ]


def test_csv_tree_relative_and_absolute_paths(tree):
    root, outside = tree
    write_csv(os.path.join(root, "manifest.csv"), manifest_rows(outside))
    assert manifest.load(root) == _expected(root, outside)
    # The file itself, also by a relative path from elsewhere.
    relative = os.path.relpath(os.path.join(root, "manifest.csv"))
    assert manifest.load(relative) == _expected(root, outside)


def test_jsonl_tree_with_json_types(tree):
    root, outside = tree
    records = []
    for row in manifest_rows(outside):
        record = {k: v for k, v in row.items() if v != ""}  # Absent keys.
        for name in ("arousal", "valence", "dominance"):
            if name in record:
                record[name] = float(record[name])
        records.append(record)
    records[1]["arousal"] = None  # null: absent.
    records[1]["valence"] = float("nan")  # json writes NaN: absent.
    records[2]["Speaker"] = records[2].pop("speaker")  # Keys are case-insensitive.
    _write_jsonl(os.path.join(root, "manifest.jsonl"), records)
    assert manifest.load(root) == _expected(root, outside)


def test_uid_and_id_columns(tree):
    root, _ = tree
    rows = [
        dict(uid="u1", id="", path="audio/s1/a.wav", emotion="anger", speaker="s1"),
        dict(uid="", id="i2", path="audio/s1/b.wav", emotion="anger", speaker="s1"),
        dict(uid="", id="", path="audio/s2/c.wav", emotion="anger", speaker="s2"),
    ]
    path = write_csv(os.path.join(root, "m.csv"), rows)
    assert [u.uid for u in manifest.load(path)] == ["u1", "i2", "audio/s2/c"]
    # No gender column: unknown gender, no gender label.
    assert all(u.gender == "" and "gender" not in u.labels for u in manifest.load(path))


def test_quoted_fields_bom_and_blank_lines(tree):
    root, _ = tree
    path = os.path.join(root, "m.csv")
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        f.write(
            ' Path , EMOTION,speaker,note\n\naudio/s1/a.wav,anger,s1,"two\nlines"\n'
        )
        f.write("\naudio/s1/b.wav,anger,s1,x\n")
    loaded = manifest.load(path)
    assert [u.uid for u in loaded] == ["audio/s1/a", "audio/s1/b"]
    # Line numbers count the blank lines and both lines of the quoted field.
    with open(path, "a") as f:
        f.write("audio/s1/zz.wav,anger,s1,x\n")
    with pytest.raises(CorpusError, match=re.escape(f"{path}, line 7: audio file")):
        manifest.load(path)


def test_reads_the_synthetic_corpus_like_its_own_loader(synthetic_root):
    assert manifest.load(synthetic_root) == synthetic.load(synthetic_root)


def _error_cases():
    """(name, manifest text, line number the error names, words it contains)."""
    header = "path,emotion,speaker,gender,arousal,split,uid\n"
    good = "audio/s1/a.wav,anger,s1,f,3.0,train,u1\n"
    return [
        ("missing column", "path,emotion\naudio/s1/a.wav,anger\n", 1, "speaker"),
        (
            "bad number",
            header + good + "audio/s1/b.wav,anger,s1,f,high,,u2\n",
            3,
            "not a number",
        ),
        (
            "infinite number",
            header + "audio/s1/b.wav,anger,s1,f,inf,,u2\n",
            2,
            "not finite",
        ),
        (
            "unknown gender",
            header + good + "audio/s1/b.wav,anger,s1,x,,,u2\n",
            3,
            "gender='x'",
        ),
        (
            "duplicate uid",
            header + good + "audio/s1/b.wav,anger,s1,f,,,u1\n",
            3,
            "line 2",
        ),
        (
            "duplicate derived uid",
            "path,emotion,speaker\naudio/s1/a.wav,anger,s1\n"
            "audio/s1/../s1/a.wav,anger,s1\n",
            3,
            "audio/s1/a",
        ),
        (
            "missing audio",
            header + "audio/s1/zz.wav,anger,s1,f,,,u1\n",
            2,
            "does not exist",
        ),
        ("bad split", header + "audio/s1/a.wav,anger,s1,f,,dev,u1\n", 2, "split"),
        (
            "empty speaker",
            header + "audio/s1/a.wav,anger,,f,,,u1\n",
            2,
            "speaker is empty",
        ),
        ("field count", header + "audio/s1/a.wav,anger,s1\n", 2, "3 fields"),
        ("column twice", "path,emotion,speaker,Path\n", 1, "named twice"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_csv_errors_name_file_and_line(tree, case):
    root, _ = tree
    name, text, line, words = _error_cases()[case]
    path = os.path.join(root, "bad.csv")
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(CorpusError) as error:
        manifest.load(path)
    message = str(error.value)
    assert f"{path}, line {line}:" in message, (name, message)
    assert words in message, (name, message)


@pytest.mark.parametrize(
    "lines, line, words",
    [
        (['{"path": "audio/s1/a.wav", "emotion": "anger"}'], 1, "speaker"),
        (
            ["", '{"path": "audio/s1/a.wav", "emotion": "anger", "speaker": 1,'],
            2,
            "not JSON",
        ),
        (['["audio/s1/a.wav", "anger", "s1"]'], 1, "JSON object"),
        (
            [
                '{"path": "audio/s1/a.wav", "emotion": "anger", "speaker": "s1", '
                '"valence": "low"}'
            ],
            1,
            "not a number",
        ),
        (
            [
                '{"path": "audio/s1/a.wav", "emotion": "anger", "speaker": "s1", '
                '"arousal": true}'
            ],
            1,
            "not a number",
        ),
        (
            ['{"path": "audio/s1/a.wav", "emotion": "anger", "speaker": 1.5}'],
            1,
            "not text",
        ),
        (
            ['{"path": "audio/s1/a.wav", "emotion": "anger", "speaker": "s1"}'] * 2,
            2,
            "already used on line 1",
        ),
    ],
)
def test_jsonl_errors_name_file_and_line(tree, lines, line, words):
    root, _ = tree
    path = os.path.join(root, "bad.jsonl")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{path}, line {line}:")) as e:
        manifest.load(path)
    assert words in str(e.value)


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("empty.csv", "", "empty file"),
        ("header_only.csv", "path,emotion,speaker\n\n", "no rows"),
        ("empty.jsonl", "\n  \n", "empty file"),
        ("manifest.txt", "path,emotion,speaker\n", ".csv or .jsonl"),
    ],
)
def test_empty_or_unknown_files(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CorpusError, match=re.escape(str(path))) as e:
        manifest.load(str(path))
    assert words in str(e.value)


def test_folder_needs_exactly_one_manifest(tmp_path):
    with pytest.raises(CorpusError, match="neither"):
        manifest.load(str(tmp_path))
    (tmp_path / "manifest.csv").write_text("path,emotion,speaker\n")
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(CorpusError, match="both"):
        manifest.load(str(tmp_path))
    with pytest.raises(CorpusError, match="not found"):
        manifest.load(str(tmp_path / "missing.csv"))


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"path,emotion,speaker\nx.wav,\xff\xfe,s1\n")
    with pytest.raises(CorpusError, match=re.escape(f"{path}: not UTF-8")):
        manifest.load(str(path))


@pytest.fixture
def sessions_tree(tmp_path):
    """4 sessions x 2 speakers (one female, one male) x 2 utterances, CSV."""
    rows = []
    for session in range(4):
        for speaker, gender in (("F", "f"), ("M", "m")):
            for i in range(2):
                relative = f"Ses{session}/{speaker}_{i}.wav"
                write_wav(str(tmp_path / relative), RATE, seconds=0.1 + 0.05 * i)
                rows.append(
                    dict(
                        path=relative,
                        emotion=("anger", "neutral")[i],
                        speaker=f"Ses{session}{speaker}",
                        gender=gender,
                        session=f"Ses{session}",
                    )
                )
    write_csv(str(tmp_path / "manifest.csv"), rows)
    return str(tmp_path)


@pytest.mark.parametrize(
    "protocol, within_group", [("speaker", False), ("group", False), ("group", True)]
)
def test_folds_are_speaker_disjoint(sessions_tree, protocol, within_group):
    utterances = manifest.load(sessions_tree)
    assert {u.group for u in utterances} == {f"Ses{i}" for i in range(4)}
    speakers = {u.speaker for u in utterances}
    folds = cv_folds(utterances, protocol, within_group=within_group)
    assert len(folds) == (8 if protocol == "speaker" else 4)
    for fold in folds:
        val, test = set(fold.val_speakers), set(fold.test_speakers)
        train = speakers - val - test
        assert val and test and train
        assert not val & test
        if protocol == "group":
            # The held-out speakers are exactly those of the held-out sessions.
            held = {u.group for u in utterances if u.speaker in test | val}
            trained = {u.group for u in utterances if u.speaker in train}
            assert not held & trained
            assert {u.group for u in utterances if u.speaker in test} == {fold.name}
