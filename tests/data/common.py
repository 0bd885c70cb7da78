"""Helpers shared by the tests of mtl_ser.data's run data, batches and pipelines."""

import numpy as np

from mtl_ser import tasks as tasks_lib

TASKS = tasks_lib.make_tasks(
    "emotion,gender,arousal", "anger,happiness,neutral,sadness", "mse"
)


def padded_window(mel, start, crop):
    """mel[start:start+crop], padded at the end with the utterance's minimum."""
    out = mel[start : start + crop]
    pad = np.full((crop - len(out), mel.shape[1]), mel.min(), mel.dtype)
    return np.concatenate([out, pad], 0)
