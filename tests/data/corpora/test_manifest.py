"""Tests of the manifest corpus adapter and the one-screen corpus summary."""

import csv
import json
import os
import re

import numpy as np
import pytest
import soundfile

from mtl_ser.data import summary
from mtl_ser.data.corpora import manifest, synthetic
from mtl_ser.data.corpora.base import CorpusError, Utterance
from mtl_ser.data.splits import cv_folds

RATE = 16000


def _wav(path, seconds=0.2, rate=RATE, channels=1):
    """Writes a sine of `seconds` as 16-bit PCM at `path`; returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    audio = 0.1 * np.sin(2 * np.pi * 220.0 * t)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    soundfile.write(path, audio, rate, subtype="PCM_16")
    return path


def _write_csv(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


@pytest.fixture
def tree(tmp_path):
    """A manifest folder: audio/<speaker>/<name>.wav plus one file elsewhere.

    Returns (root, outside_path): the manifest folder and the absolute path of a
    wav outside it.
    """
    root = tmp_path / "corpus"
    _wav(str(root / "audio" / "s1" / "a.wav"), 0.2)
    _wav(str(root / "audio" / "s1" / "b.wav"), 0.3)
    _wav(str(root / "audio" / "s2" / "c.wav"), 0.25, channels=2)
    outside = _wav(str(tmp_path / "elsewhere" / "d.wav"), 0.4)
    return str(root), outside


def _rows(outside):
    """The four utterances of `tree`, as CSV text fields."""
    return [
        dict(
            path="audio/s1/a.wav",
            emotion="Anger",
            speaker="s1",
            gender="F",
            session="ses1",
            arousal="4.5",
            valence="1.5",
            dominance="",
            split="train",
        ),
        dict(
            path="audio/s1/b.wav",
            emotion="neutral",
            speaker="s1",
            gender="female",
            session="ses1",
            arousal="",
            valence="",
            dominance="",
            split="val",
        ),
        dict(
            path="./audio/s2/../s2/c.wav",
            emotion="sadness",
            speaker="s2",
            gender="m",
            session="ses2",
            arousal="1.25",
            valence="2",
            dominance="3",
            split="",
        ),
        dict(
            path=outside,
            emotion="happiness",
            speaker="s3",
            gender="",
            session="",
            arousal="",
            valence="",
            dominance="",
            split="test",
        ),
    ]


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
    _write_csv(os.path.join(root, "manifest.csv"), _rows(outside))
    assert manifest.load(root) == _expected(root, outside)
    # The file itself, also by a relative path from elsewhere.
    relative = os.path.relpath(os.path.join(root, "manifest.csv"))
    assert manifest.load(relative) == _expected(root, outside)


def test_jsonl_tree_with_json_types(tree):
    root, outside = tree
    records = []
    for row in _rows(outside):
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
    path = _write_csv(os.path.join(root, "m.csv"), rows)
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
                _wav(str(tmp_path / relative), 0.1 + 0.05 * i)
                rows.append(
                    dict(
                        path=relative,
                        emotion=("anger", "neutral")[i],
                        speaker=f"Ses{session}{speaker}",
                        gender=gender,
                        session=f"Ses{session}",
                    )
                )
    _write_csv(str(tmp_path / "manifest.csv"), rows)
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


# --- summary ---------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.generate(root, num_speakers=4, utterances_per_speaker=4)
    return root


def test_summary_of_the_synthetic_corpus(synthetic_root):
    utterances = synthetic.load(synthetic_root)
    seconds = summary.audio_durations(u.path for u in utterances)
    assert len(seconds) == 16
    for path, value in seconds.items():  # Header-only equals decoded length.
        assert value == len(soundfile.read(path)[0]) / 16000
    lines = summary.summarise(utterances).splitlines()
    hours = sum(seconds.values()) / 3600
    assert lines[0].startswith(f"16 utterances, 4 speakers; {hours:.2f} h of audio")
    assert lines[1] == "emotion (4 classes)"
    for emotion in synthetic.EMOTIONS:
        paths = [u.path for u in utterances if u.labels["emotion"] == emotion]
        line = next(x for x in lines if x.startswith(f"  {emotion} "))
        count, share, class_hours, unit = line.split()[1:]
        assert (count, share, unit) == ("4", "25.0%", "h")
        assert class_hours == f"{sum(seconds[p] for p in paths) / 3600:.2f}"
    assert "gender: female 8 (50.0%), male 8 (50.0%)" in lines
    assert "speakers (4; 4 utterances each):" in lines
    assert "  spk00 4  spk01 4  spk02 4  spk03 4" in lines
    assert not any(x.startswith("groups") for x in lines)  # No sessions.
    assert any(x.startswith("arousal: 16 of 16 labelled, mean ") for x in lines)
    assert not any("unreadable" in x for x in lines)


def test_summary_of_a_manifest_tree_counts_unreadable_files(tree):
    root, outside = tree
    with open(os.path.join(root, "audio", "s1", "broken.wav"), "wb") as f:
        f.write(b"not a wav file at all")
    rows = _rows(outside)
    rows.append(dict(rows[0], path="audio/s1/broken.wav", split="train"))
    _write_csv(os.path.join(root, "manifest.csv"), rows)
    utterances = manifest.load(root)
    seconds = summary.audio_durations(u.path for u in utterances)
    assert [seconds[u.path] for u in utterances] == pytest.approx(
        [0.2, 0.3, 0.25, 0.4, None]
    )
    missing = os.path.join(root, "gone.wav")  # Deleted after loading: not fatal.
    utterances.append(Utterance("gone", missing, "s3", "", "", {"emotion": "fear"}))
    lines = summary.summarise(utterances).splitlines()
    assert lines[0] == (
        "6 utterances, 3 speakers; 0.00 h of audio (mean 0.3 s, 0.2-0.4 s)"
    )
    assert lines[1:8] == [
        "emotion (5 classes)",
        "  anger               2   33.3%     0.00 h",
        "  fear                1   16.7%     0.00 h",
        "  happiness           1   16.7%     0.00 h",
        "  neutral             1   16.7%     0.00 h",
        "  sadness             1   16.7%     0.00 h",
        "gender: female 3 (50.0%), unknown 2 (33.3%), male 1 (16.7%)",
    ]
    assert "groups (3):" in lines
    assert "  (none) 2  ses1 3  ses2 1" in lines
    assert "arousal: 3 of 6 labelled, mean 3.42, range 1.25 to 4.50" in lines
    assert "split: 4 of 6 labelled; train 2, val 1, test 1" in lines
    assert lines[-1] == (
        "2 unreadable file(s) (soundfile cannot open them), e.g. "
        + os.path.join(root, "audio", "s1", "broken.wav")
    )


def _large_corpus():
    """10k utterances: 7 emotions, 24 speakers in 5 sessions, 3 dimensions, split."""
    emotions = (
        "anger",
        "boredom",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
    )
    utterances = []
    for i in range(10_000):
        s = i % 24
        utterances.append(
            Utterance(
                uid=f"u{i}",
                path=f"/nowhere/u{i}.wav",
                speaker=f"Ses0{s // 5 + 1}{'FM'[s % 2]}_{s:02d}",
                group=f"Ses0{s // 5 + 1}",
                gender=("female", "male")[s % 2],
                labels=dict(
                    emotion=emotions[i % 7],
                    arousal=1.0 + i % 5,
                    valence=2.0,
                    dominance=3.0,
                    split=("train", "val", "test")[i % 3],
                ),
            )
        )
    return utterances


def test_summary_of_a_large_corpus_fits_one_screen():
    utterances = _large_corpus()
    text = summary.summarise(utterances, durations=False)
    lines = text.splitlines()
    assert len(lines) <= 30, text
    assert max(map(len, lines)) <= summary.WIDTH, text
    assert lines[0] == "10,000 utterances, 24 speakers"
    assert "  anger           1,429   14.3%" in lines
    assert "speakers (24; 416-417 utterances each, median 417):" in lines
    assert sum(x.count("Ses0") for x in lines if x.startswith("  Ses0")) == 24 + 5
    assert "more" not in text


def test_summary_cuts_long_speaker_lists():
    utterances = [
        Utterance(f"u{i}", f"/x/{i}.wav", f"speaker{i:04d}", "", "", {"emotion": "a"})
        for i in range(2000)
    ]
    lines = summary.summarise(utterances, durations=False).splitlines()
    start = lines.index("speakers (2,000; 1 utterances each):") + 1
    wrapped = lines[start:]
    assert len(wrapped) == summary.MAX_WRAPPED_LINES
    assert max(map(len, wrapped)) <= summary.WIDTH
    shown = sum(x.count("speaker") for x in wrapped)
    assert wrapped[-1].endswith(f"  ... and {2000 - shown:,} more")
    assert "  speaker0000 1  speaker0001 1" in wrapped[0]
    assert summary.summarise([]) == "0 utterances, 0 speakers; no readable audio"
