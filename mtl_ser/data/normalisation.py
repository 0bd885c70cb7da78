"""The training split's normalisation statistics, saved beside the run.

Prediction needs two things training computed from the training split only:
the per-mel-band mean and std of the log-mels (`run_data.Data.mean/std`) and
each regression target's mean and std (`Data.target_stats`: the model predicts
standardised targets). Training writes them to `<workdir>/normalisation.json`:

  {"mean": [F floats], "std": [F floats],
   "targets": {"arousal": {"mean": m, "std": s}, ...}}

The float32 band statistics are written as the float64 numbers they equal, so
they read back bit for bit. Runs made before this file existed get their
statistics rebuilt from the corpus (`load_or_rebuild`).
"""

import json
import os

import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import audio, run_data
from mtl_ser.data.corpora.base import CorpusError
from mtl_ser.errors import ConfigError, WorkdirError
from mtl_ser.files import write_json

FILENAME = "normalisation.json"


def to_json(data: run_data.Data) -> dict:
    """The statistics of `data` as a JSON-ready dict (see the module docstring)."""
    return {
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "targets": {
            name: {"mean": float(mean), "std": float(std)}
            for name, (mean, std) in data.target_stats.items()
        },
    }


def save(workdir: str, data: run_data.Data):
    """Writes `<workdir>/normalisation.json` (process 0 only, atomically)."""
    write_json(os.path.join(workdir, FILENAME), to_json(data))


def statistics_data(mean, std, target_stats: dict) -> run_data.Data:
    """A run_data.Data with statistics and no splits (what prediction needs)."""
    return run_data.Data(
        splits={},
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        dropped=0,
        target_stats=dict(target_stats),
    )


def load(workdir: str) -> "run_data.Data | None":
    """The statistics saved in `workdir`, or None when it has no file.

    Raises:
      WorkdirError: the file is not a normalisation file.
    """
    path = os.path.join(workdir, FILENAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
        targets = {
            name: (float(t["mean"]), float(t["std"]))
            for name, t in saved["targets"].items()
        }
        return statistics_data(saved["mean"], saved["std"], targets)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WorkdirError(
            f"{path}: unreadable normalisation statistics ({type(e).__name__}: {e})"
        ) from e


def load_or_rebuild(workdir: str, config, tasks, *, verbose=True) -> run_data.Data:
    """The run's statistics: saved in `workdir`, else rebuilt from its corpus.

    Rebuilding reads the corpus and its feature cache as training did
    (`run_data.build_data`); it gives the training statistics as long as the
    corpus has not changed since.

    Args:
      workdir: the run folder.
      config: the run's config.
      tasks: its tasks.
      verbose: say when the statistics are rebuilt.

    Returns:
      A run_data.Data whose mean, std and target_stats are the run's (its
      splits are empty when read from the file).

    Raises:
      WorkdirError: no file and the corpus cannot be read, or
        statistics that do not fit the config (feature bands, tasks).
    """
    data = load(workdir)
    if data is None:
        path = os.path.join(workdir, FILENAME)
        if verbose:
            print(
                f"{path} not found (a run made before it was saved): rebuilding "
                f"the training statistics from corpus {config.corpus.root}",
                flush=True,
            )
        try:
            data = run_data.build_data(config, tasks, verbose=False)
        except (CorpusError, ConfigError, audio.AudioError, OSError) as e:
            raise WorkdirError(
                f"{path} not found, and the training corpus cannot rebuild the "
                f"statistics: {e}"
            ) from e
    _check_fits(data, config, tasks, os.path.join(workdir, FILENAME))
    return data


def _check_fits(data: run_data.Data, config, tasks, path: str):
    """Raises WorkdirError if the statistics do not match the config."""
    n_mels = config.features.n_mels
    if data.mean.shape != (n_mels,) or data.std.shape != (n_mels,):
        raise WorkdirError(
            f"{path}: statistics for {data.mean.shape} bands, but "
            f"features.n_mels={n_mels}"
        )
    regression = sorted(t.name for t in tasks if t.kind == tasks_lib.REGRESSION)
    if sorted(data.target_stats) != regression:
        raise WorkdirError(
            f"{path}: target statistics for {sorted(data.target_stats)}, but the "
            f"regression tasks are {regression}"
        )
