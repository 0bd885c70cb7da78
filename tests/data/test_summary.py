"""data.summary: the one-screen corpus summary and the one-line counts of what a
run left out and excluded."""

import os

import pytest
import soundfile

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import summary
from mtl_ser.data.corpora import manifest, synthetic
from mtl_ser.data.corpora.base import Utterance
from tests.data.corpora.common import manifest_rows, write_csv


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
    rows = manifest_rows(outside)
    rows.append(dict(rows[0], path="audio/s1/broken.wav", split="train"))
    write_csv(os.path.join(root, "manifest.csv"), rows)
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


def test_unlabelled_and_excluded_count_by_label_and_by_kind():
    task = tasks_lib.Task("emo", tasks_lib.CLASSIFICATION, "emotion", ("anger",))
    labels = [{"emotion": "anger"}, {"emotion": "fear"}, {}, {"emotion": "fear"}]
    utterances = [
        Utterance(f"u{i}", f"/x/u{i}.wav", "s1", "", "", label)
        for i, label in enumerate(labels)
    ]
    # Counted by the task's label key, most frequent first, under its name.
    assert summary.unlabelled(task, utterances, utterances[:1]) == (
        "Left out 3 of 4 utterances without a label among the classes of task "
        "emo: fear 2, (none) 1"
    )
    excluded = [
        ("a", "/x/a.wav", "truncated WAV file (4,000 of 16,000 frames)"),
        ("b", "/x/b.wav", "empty file (0 bytes)"),
        ("c", "/x/c.wav", "truncated WAV file; header says 12 bytes"),
    ]
    # A reason's particulars, after " (" or ";", do not split its kind.
    assert summary.excluded(excluded, 10) == (
        "Excluded 3 of 10 audio files as unusable (see excluded.tsv): "
        "truncated WAV file (2), empty file (1)"
    )
