"""Predictions of a trained run on new audio, as its evaluation computes them.

  predictor = Predictor("runs/synthetic")
  predictor.predict(waveform, sample_rate)  # {"emotion": {"class": ...,
  # "probabilities": {...}}, "arousal": {"value": ...}, ...}
  rows, skipped = predictor.predict_files(["a.wav", "b.wav"])

The run's `config.json` rebuilds the model and its evaluation step; the best
checkpoint (else the latest) gives the weights and `normalisation.json` the
training statistics. A file goes the feature path of training (decode,
resample, trim, log-mel: `cache.utterance_features`) and the windows of
evaluation (`pipeline.eval_batches`); its windows' class probabilities and
regression values are averaged, and the values mapped back to label units,
by the very code evaluation uses (`evaluate.predict_split`). So predictions
on a run's test files reproduce its test metrics exactly (on the same devices
and XLA flags: another compilation of the step may round differently).

Every process of a multi-process run must build the Predictor and call its
methods with the same inputs: they run the jitted step on the mesh.
"""

import os
import tempfile
from typing import Sequence

import jax
import numpy as np
import tqdm

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import audio, cache, normalisation, run_data, statistics
from mtl_ser.errors import ConfigError
from mtl_ser.training import build, checkpointing, evaluate, sharding
from mtl_ser.training import workdir as workdir_lib

# Files whose log-mels are held in memory at once by predict_files; each
# chunk's windows are batched as evaluation batches a split's.
FILES_PER_CHUNK = 256


class Predictor:
    """A trained run, ready to predict: its config, model, weights, statistics.

    Attributes:
      workdir: the run folder.
      config: the run's config (from config.json).
      tasks: its tasks, in output order.
      checkpoint: ("best" or "latest", step) of the restored weights.
    """

    def __init__(self, workdir: str, *, mesh=None, verbose: bool = True):
        """Loads the run in `workdir`.

        Args:
          workdir: a training run's folder.
          mesh: the device mesh (default: all devices).
          verbose: say so when the statistics are rebuilt from the corpus.

        Raises:
          workdir_lib.WorkdirError: no config.json or no checkpoint in `workdir`,
            or no statistics (see normalisation.load_or_rebuild).
          ConfigError: data.eval_batch_size does not split over the devices.
        """
        self.workdir = workdir
        self.config = c = workdir_lib.load_config(workdir)
        self.tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        try:
            sharding.check_batch_size(c.data.eval_batch_size, "data.eval_batch_size")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not checkpointing.has_checkpoint(workdir):  # Before any folder is made.
            raise workdir_lib.WorkdirError(_NO_CHECKPOINT.format(workdir=workdir))
        ckpt = checkpointing.Checkpointer(
            workdir, keep=c.train.keep_checkpoints, best_metric=c.train.best_metric
        )
        try:
            self.checkpoint = _chosen_checkpoint(ckpt, workdir)
            self.statistics = normalisation.load_or_rebuild(
                workdir, c, self.tasks, verbose=verbose
            )
            steps = build.build_eval(c, self.tasks, self.mesh)
            self.state = _restore(ckpt, *self.checkpoint, steps.abstract_state)
        finally:
            ckpt.close()
        self.eval_fn = steps.eval_fn

    def predict(self, waveform: np.ndarray, sample_rate: int) -> dict:
        """Predicts one utterance from its samples.

        Args:
          waveform: [N] or [N, channels] samples (see `conform_waveform`).
          sample_rate: their rate in Hz; resampled as files are.

        Returns:
          {task: {"class": name, "probabilities": {class: p}}} for each
          classification task, {task: {"value": v}} for each regression task.

        Raises:
          audio.AudioError: the samples cannot be used (as a file's could not).
        """
        features = self.config.features
        wave = conform_waveform(waveform, sample_rate, features.sample_rate)
        mel = cache.waveform_features(wave, features, name="waveform")
        return self.results(self.predict_features([mel]))[0]

    @property
    def normalisation(self) -> str:
        """The run's data.normalisation (data/statistics.py)."""
        return self.config.data.normalisation

    def predict_files(
        self, paths: Sequence[str], *, speakers=None, progress: bool = False
    ) -> tuple[list, list]:
        """Predicts each file; a file that cannot be used is skipped.

        Args:
          paths: audio files.
          speakers: with a run normalised per speaker, each file's speaker (a
            string, or None: the file is standardised by its own statistics);
            the files of a speaker are standardised by the statistics of all
            of them. Ignored by other runs. None: no speaker known.
          progress: show a progress bar (process 0).

        Returns:
          (rows, skipped): rows {"path": path, **predict()'s dict, "statistics":
          which statistics standardised it, "warning": ...} of the files
          predicted, in the given order; (path, reason) of the others.
        """
        paths = [os.fspath(p) for p in paths]
        with tempfile.TemporaryDirectory(prefix="mtl_ser-predict-") as spill:
            return self._predict_files(paths, speakers, progress, spill)

    def _predict_files(self, paths, speakers, progress, spill) -> tuple[list, list]:
        """predict_files, with `spill` a folder for the first pass's log-mels."""
        groups = self._groups(paths, speakers)
        by_group, skipped = {}, []
        two_passes = self.normalisation == "speaker"
        if two_passes:  # A first pass: the speakers' sums.
            by_group, skipped = self._group_sums(paths, groups, spill, progress)
        unusable = {path for path, _ in skipped}
        rows = []
        bar = self._bar(len(paths), progress and not by_group)
        for start in range(0, len(paths), FILES_PER_CHUNK):
            kept, mels, stats = [], [], []
            for i in range(start, min(start + FILES_PER_CHUNK, len(paths))):
                path = paths[i]
                if path in unusable:
                    continue
                if two_passes:  # Usable: the first pass spilled its log-mel.
                    mel, reason = np.load(_spilled(spill, i)), None
                else:
                    mel, reason = self._features(path)
                bar.update(1)
                if mel is None:
                    skipped.append((path, reason))
                    continue
                kept.append(path)
                mels.append(mel)
                stats.append(by_group.get(groups[i]))
            if mels:
                band_stats = _stacked(stats) if by_group else None
                results = self.results(self.predict_features(mels, band_stats))
                for path, mel, result, own in zip(
                    kept, mels, results, stats, strict=True
                ):
                    used = self._statistics_used(own)
                    rows.append(
                        {
                            "path": path,
                            **result,
                            "statistics": used,
                            "warning": self.warning(mel),
                        }
                    )
        bar.close()
        return rows, skipped

    def _groups(self, paths, speakers) -> list:
        """Each file's statistics group: its speaker, or the file alone."""
        if speakers is None:
            speakers = [None] * len(paths)
        if len(speakers) != len(paths):
            raise ValueError(f"{len(speakers)} speakers for {len(paths)} files")
        return [
            ("speaker", str(s)) if s not in (None, "") else ("file", i)
            for i, s in enumerate(speakers)
        ]

    def _group_sums(self, paths, groups, spill, progress) -> tuple[dict, list]:
        """Group -> (mean, std, files) over its usable files, and the files
        that cannot be used, (path, reason); one pass over the files, which
        leaves each usable file's log-mel in `spill` (_spilled), so the second
        pass reads it instead of decoding the file again."""
        sums, skipped = {}, []
        bar = self._bar(len(paths), progress)
        for i, (path, group) in enumerate(zip(paths, groups, strict=True)):
            mel, reason = self._features(path)
            bar.update(1)
            if mel is None:
                skipped.append((path, reason))
                continue
            np.save(_spilled(spill, i), mel)
            count, total, total_sq = statistics.utterance_sums(
                _InMemoryStore([mel]), [0]
            )
            old = sums.get(group, (0, 0.0, 0.0, 0))
            sums[group] = (
                old[0] + count[0],
                old[1] + total[0],
                old[2] + total_sq[0],
                old[3] + 1,
            )
        bar.close()
        out = {}
        for group, (count, total, total_sq, files) in sums.items():
            mean, std = statistics.pooled_statistics(count, total, total_sq)
            out[group] = (mean, std, group, files)
        return out, skipped

    def _features(self, path: str):
        """(log-mel, None) of a file as training computes it, or (None, why
        it cannot be used)."""
        try:
            return cache.utterance_features(path, self.config.features), None
        except (audio.AudioError, OSError) as e:
            return None, _reason(e, path)

    def _bar(self, total: int, show: bool):
        return tqdm.tqdm(
            total=total, unit="file", disable=not show or jax.process_index() != 0
        )

    def _statistics_used(self, group_stats) -> str:
        """The predictions' `statistics` column: which statistics standardised
        the file (Predictor.predict_files)."""
        mode = self.normalisation
        if mode == "train":
            return "training split"
        if mode == "none":
            return "none"
        if group_stats is None or group_stats[2][0] == "file":
            return "own utterance"
        _, _, (_, speaker), files = group_stats
        return f"speaker {speaker} ({files} file{'s' if files > 1 else ''})"

    def warning(self, mel: np.ndarray) -> str:
        """ "" or why a prediction of this log-mel [T, F] deserves less trust:
        an utterance shorter than one window is padded to it."""
        d, f = self.config.data, self.config.features
        if len(mel) >= d.crop_frames:
            return ""
        seconds = lambda frames: frames * f.hop_length / f.sample_rate  # noqa: E731
        return (
            f"shorter than one window ({seconds(len(mel)):.2f} s of speech after "
            f"trimming < {seconds(d.crop_frames):.2f} s): padded"
        )

    def predict_features(self, mels: Sequence[np.ndarray], band_stats=None) -> dict:
        """Utterance predictions from log-mels as the cache holds them.

        Args:
          mels: N arrays [T_i, n_mels] (cache.utterance_features).
          band_stats: with a run normalised per speaker, (mean, std) [N, F]
            that standardise each; None: each its own statistics (such a run's
            fallback, and what a run normalised per utterance uses).

        Returns:
          {task: [N, C] mean class probabilities or [N] values in label units}.
        """
        c = self.config
        preds = evaluate.predict_split(
            self.eval_fn,
            self.state,
            _in_memory_split(mels, self.tasks, self.normalisation, band_stats),
            self.statistics,
            self.mesh,
            **evaluate.windowing(c.data),
        )
        return self.statistics.unstandardise(preds)

    def results(self, predictions: dict) -> list[dict]:
        """predict_features' arrays -> one dict per utterance, as predict()."""
        num = len(predictions[self.tasks[0].name])
        rows = [{} for _ in range(num)]
        for task in self.tasks:
            for row, p in zip(rows, predictions[task.name], strict=True):
                if task.kind == tasks_lib.CLASSIFICATION:
                    row[task.name] = {
                        "class": task.classes[int(np.argmax(p))],
                        "probabilities": dict(
                            zip(task.classes, map(float, p), strict=True)
                        ),
                    }
                else:
                    row[task.name] = {"value": float(p)}
        return rows


def _chosen_checkpoint(ckpt, workdir: str) -> tuple[str, int]:
    """("best", step) if the run has a best checkpoint, else ("latest", step)."""
    if ckpt.best.best_step() is not None:
        return "best", int(ckpt.best.best_step())
    if ckpt.latest_step() is not None:
        return "latest", int(ckpt.latest_step())
    raise workdir_lib.WorkdirError(_NO_CHECKPOINT.format(workdir=workdir))


_NO_CHECKPOINT = (
    "{workdir}: no checkpoint to predict with (best/ and checkpoints/ hold none); "
    "train the run first"
)


def _restore(ckpt, kind: str, step: int, state):
    """The train state of checkpoint (kind, step), shaped and sharded as
    `state` (a state, or its shapes: build.EvalSteps.abstract_state)."""
    manager = ckpt.best if kind == "best" else ckpt.latest
    return checkpointing.restore_state(manager, step, state)[0]


class _InMemoryStore:
    """Log-mels held in memory, read as a cache.FeatureStore is."""

    def __init__(self, mels: Sequence[np.ndarray]):
        self.lengths = np.array([len(m) for m in mels], np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.frames = np.concatenate(mels).astype(np.float32, copy=False)
        self.floors = np.array([m.min() for m in mels], np.float32)


def _spilled(spill: str, i: int) -> str:
    """Where predict_files' first pass leaves file i's log-mel."""
    return os.path.join(spill, f"{i}.npy")


def _stacked(stats: Sequence[tuple]) -> tuple:
    """(mean, std) [N, F] of N files' group statistics (mean, std, ...)."""
    return tuple(np.stack([s[k] for s in stats]) for k in (0, 1))


def _in_memory_split(mels, tasks, mode="train", band_stats=None) -> run_data.SplitData:
    """An unlabelled split of these log-mels, for evaluate.predict_split,
    standardised as a run normalised by `mode` standardises them: by
    `band_stats` when given, else, for a per-utterance mode, each log-mel by
    its own statistics."""
    n = len(mels)
    dtypes = {tasks_lib.CLASSIFICATION: np.int32, tasks_lib.REGRESSION: np.float32}
    store = _InMemoryStore(mels)
    if band_stats is None and mode in statistics.PER_UTTERANCE:
        band_stats = statistics.group_statistics(store, np.arange(n), np.arange(n))
    return run_data.SplitData(
        band_stats=() if band_stats is None else tuple(band_stats),
        store=store,
        rows=np.arange(n),
        uids=tuple(range(n)),
        speakers=("",) * n,
        labels={t.name: np.zeros(n, dtypes[t.kind]) for t in tasks},
        masks={t.name: np.zeros(n, np.float32) for t in tasks},
    )


def conform_waveform(waveform, sample_rate: int, target_rate: int) -> np.ndarray:
    """Samples -> what audio.load_audio makes of a file: [N'] float32 mono.

    Args:
      waveform: [N] or [N, channels] samples (soundfile's layout; channels are
        averaged), floats in [-1, 1] or signed integer PCM (scaled by its full
        range, as soundfile reads PCM files).
      sample_rate: their rate in Hz.
      target_rate: the features' rate; resampled as load_audio resamples.

    Raises:
      audio.AudioError: no samples, NaN/Inf, all zero, or a rate below 4 kHz.
      ValueError: not a 1-D or 2-D array of numbers, or a fractional rate.
    """
    wave = np.asarray(waveform)
    if wave.ndim not in (1, 2) or not (
        np.issubdtype(wave.dtype, np.floating)
        or np.issubdtype(wave.dtype, np.signedinteger)
    ):
        raise ValueError(
            f"waveform: {wave.dtype} array of shape {wave.shape}; expected float "
            "or signed integer samples [N] or [N, channels]"
        )
    if np.issubdtype(wave.dtype, np.signedinteger):
        wave = wave / float(2 ** (8 * wave.dtype.itemsize - 1))
    wave = wave.astype(np.float32)
    if int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be an integer, got {sample_rate}")
    wave = wave[:, None] if wave.ndim == 1 else wave
    return audio.conform(wave, int(sample_rate), int(target_rate), "waveform")


def _reason(error: Exception, path: str) -> str:
    """The problem alone, on one line: the message without its leading path."""
    text = str(error)
    if not isinstance(error, audio.AudioError):  # E.g. PermissionError.
        text = f"{type(error).__name__}: {text}"
    if text.startswith(f"{path}: "):
        text = text[len(path) + 2 :]
    return " ".join(text.split())
