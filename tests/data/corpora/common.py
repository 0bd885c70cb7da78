"""Helpers of the corpus adapter tests: short WAV files, fold checks."""

import os

import numpy as np
import soundfile as sf

from mtl_ser.data import splits

FOUR_CLASSES = "anger,happiness,neutral,sadness"


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
