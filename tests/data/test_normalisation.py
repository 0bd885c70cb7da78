"""data.normalisation: the training split's statistics saved beside the run.

How prediction uses them, and rebuilds them for a run without the file, is
tested end to end in tests/outputs/test_predict.py.
"""

import json
import os
import re

import ml_collections
import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import normalisation
from mtl_ser.errors import WorkdirError


def _statistics(n_mels=8, seed=0):
    """Statistics as training computes them: float32 bands, float targets."""
    rng = np.random.default_rng(seed)
    mean = (rng.normal(size=n_mels) * 20 - 40).astype(np.float32)
    std = rng.uniform(1, 10, size=n_mels).astype(np.float32)
    targets = {name: tuple(rng.uniform(0.5, 4.5, 2)) for name in ("arousal", "valence")}
    return normalisation.statistics_data(mean, std, targets)


def test_save_then_load_round_trips_exactly(tmp_path):
    workdir = str(tmp_path)
    assert normalisation.load(workdir) is None  # No file: nothing saved yet.
    data = _statistics()
    normalisation.save(workdir, data)
    with open(os.path.join(workdir, normalisation.FILENAME)) as f:
        saved = json.load(f)
    assert sorted(saved) == ["mean", "std", "targets"]
    loaded = normalisation.load(workdir)
    assert loaded.mean.dtype == loaded.std.dtype == np.float32
    np.testing.assert_array_equal(loaded.mean, data.mean)  # Bit for bit.
    np.testing.assert_array_equal(loaded.std, data.std)
    assert loaded.target_stats == data.target_stats
    assert loaded.splits == {}


def test_bad_or_unfitting_statistics_name_the_file(tmp_path):
    workdir = str(tmp_path)
    path = os.path.join(workdir, normalisation.FILENAME)
    normalisation.save(workdir, _statistics(n_mels=8))
    config = ml_collections.ConfigDict({"features": {"n_mels": 8}})
    tasks = tasks_lib.make_tasks("emotion,arousal,valence", "anger,sadness", "mse")
    fits = normalisation.load_or_rebuild(workdir, config, tasks, verbose=False)
    assert fits.mean.shape == (8,)
    config.features.n_mels = 16
    with pytest.raises(WorkdirError, match=re.escape(f"{path}: statistics for (8,)")):
        normalisation.load_or_rebuild(workdir, config, tasks, verbose=False)
    config.features.n_mels = 8
    with pytest.raises(WorkdirError, match=re.escape(f"{path}: target statistics")):
        normalisation.load_or_rebuild(workdir, config, tasks[:2], verbose=False)
    for text in ("{", '{"mean": [0.0], "std": [1.0]}', "[]"):
        with open(path, "w") as f:
            f.write(text)
        with pytest.raises(
            WorkdirError, match=re.escape(f"{path}: unreadable normalisation")
        ):
            normalisation.load(workdir)
