"""Helpers of the corpus adapter tests: short WAV files, fold checks, and the
manifest tree of tests/data/corpora/test_manifest.py and tests/data/test_summary.py."""

import csv
import os

import numpy as np
import soundfile as sf

from mtl_ser.data import splits

FOUR_CLASSES = "anger,happiness,neutral,sadness"
RATE = 16000


def write_wav(path, rate, channels=1, seconds=0.2):
    """A short sine (one frequency per channel), 16-bit PCM as in both releases."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (220, 330)[:channels]])
    sf.write(path, wave.T, rate, subtype="PCM_16")
    return path


def check_folds(utterances):
    speakers = {u.speaker for u in utterances}
    for folds in (
        splits.cv_folds(utterances, "speaker"),
        splits.cv_folds(utterances, "kfold", num_folds=3),
    ):
        tested = [s for f in folds for s in f.test_speakers]
        assert sorted(tested) == sorted(speakers)  # Each speaker tested once.
        for f in folds:
            assert not set(f.val_speakers) & set(f.test_speakers)
            assert speakers - set(f.val_speakers) - set(f.test_speakers)


def write_csv(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def manifest_rows(outside):
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
