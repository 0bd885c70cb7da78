"""A run's data: the corpus split speaker-independently, each split's rows of
the feature cache, its encoded labels, and the normalisation statistics
(`build_data`). data/pipeline.py makes batches of it.

Augmentation happens to training examples only: speed-perturbed copies of the
corpus (data.speed_factors, cached like the original) and, with
data.features_on_device, the training split's waveform stores. Evaluation and
the normalisation statistics use the original features alone.
"""

import collections
import dataclasses
import os
import re
from typing import Sequence

import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import cache, corpora, splits, statistics, summary
from mtl_ser.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SpeedCopy:
    """A speed-perturbed copy of a split's utterances (data.speed_factors).

    Attributes:
      factor: the speed factor (> 1: faster and higher).
      store: the feature store of the whole corpus at this speed.
      rows: [N] store row of each of the split's utterances; -1 where the copy
        lacks one (its audio was unusable at this speed): it trains on its
        original instead.
    """

    factor: float
    store: cache.FeatureStore
    rows: np.ndarray


@dataclasses.dataclass(frozen=True)
class SplitData:
    """One split: which store rows, and its encoded labels.

    Attributes:
      store: the feature store.
      rows: [N] store rows of the split's utterances.
      uids: the utterance ids, in split order.
      speakers: their speakers.
      labels, masks: task name -> [N] arrays (see tasks.encode_labels).
      speed_copies: SpeedCopy of each speed factor; training draws from them
        and the original (the train split only; empty when off).
      waveforms: with data.features_on_device (the train split only), the
        SpeedCopy of each waveform store: the original (factor 1.0), then one
        per speed factor; training examples then carry audio (the module's
        docstring), and speed_copies is empty. Empty when off.
      band_stats: with a per-utterance data.normalisation ("speaker",
        "utterance"), (mean, std) [N, F] that standardise each utterance
        (data/statistics.py); empty otherwise (Data.mean/std serve all).
    """

    store: cache.FeatureStore
    rows: np.ndarray
    uids: tuple
    speakers: tuple
    labels: dict
    masks: dict
    speed_copies: tuple = ()
    waveforms: tuple = ()
    band_stats: tuple = ()

    def __len__(self):
        return len(self.rows)


@dataclasses.dataclass(frozen=True)
class Data:
    """Everything training needs from the data side."""

    splits: dict  # "train"/"val"/"test" -> SplitData
    # [F] per-mel-band mean and std of the training split (0 and 1 with
    # data.normalisation="none"); a split with band_stats uses those instead.
    mean: np.ndarray
    std: np.ndarray
    dropped: int  # utterances without a main-task label
    # Regression task -> (mean, std) of its training labels. The model learns
    # standardised targets; evaluation maps predictions back (`unstandardise`).
    target_stats: dict
    # (uid, path, reason) of each utterance excluded for unusable audio.
    excluded: tuple = ()

    def unstandardise(self, predictions: dict) -> dict:
        """Maps regression predictions back to label units."""
        out = dict(predictions)
        for name, (mean, std) in self.target_stats.items():
            out[name] = predictions[name] * std + mean
        return out


def build_data(config, tasks: Sequence[tasks_lib.Task], *, verbose=True) -> Data:
    """Corpus -> cached features -> speaker-independent splits -> statistics.

    Files with unusable audio are excluded before the split (`Data.excluded`),
    or stop the build when `config.data.bad_audio` is "fail". With
    `config.data.speed_factors`, the train split also gets its speed copies
    (`SplitData.speed_copies`); the statistics come from the original alone.
    With `config.data.features_on_device`, it gets its waveform stores instead
    (`SplitData.waveforms`, with the speed factors' own).

    Args:
      config: the full config (reads corpus, split, features, data).
      tasks: the task tuple; utterances without a label for tasks[0] are dropped.
      verbose: print the split summary, and the exclusions by kind.

    Returns:
      A Data.

    Raises:
      AudioError: a file is unusable and data.bad_audio is "fail", or no file
        is usable; the message names the file.
    """
    _check_single_split(config.split.protocol)
    utterances = corpora.load_corpus(config.corpus)
    kept = labelled(utterances, tasks[0])
    if verbose and len(kept) < len(utterances):
        print(summary.unlabelled(tasks[0], utterances, kept), flush=True)
    # Both fail before caching.
    check_main_classes(split_utterances(config.split, kept)["train"], tasks[0])
    store = cache.build_cache(
        kept, config.features, bad_audio=config.data.bad_audio, verbose=verbose
    )
    split_data = _usable_splits(config, store, kept, tasks)
    mean, std = band_statistics(split_data["train"])
    if config.data.normalisation == "none":
        mean, std = np.zeros_like(mean), np.ones_like(std)
    split_data = _per_utterance_statistics(split_data, config.data.normalisation)
    split_data["train"] = _train_copies(config, kept, split_data["train"], verbose)
    if verbose:
        if store.excluded:
            print(summary.excluded(store.excluded, len(kept)), flush=True)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in split_data.items())
        print(f"Corpus {config.corpus.name}: {sizes} utterances", flush=True)
    return Data(
        split_data,
        mean,
        std,
        len(utterances) - len(kept),
        target_statistics(split_data["train"], tasks),
        excluded=store.excluded,
    )


def _check_single_split(protocol: str) -> None:
    if protocol not in splits.SINGLE_SPLITS:
        raise ConfigError(
            f"split.protocol={protocol!r} is a cross-validation: run "
            "launch.py --mode=cv (--config.split.fold=i for one fold)"
        )


def _usable_splits(config, store, kept, tasks) -> dict:
    """ "train"/"val"/"test" -> SplitData of the utterances whose audio was
    usable, class-balanced with data.class_weights="balanced"."""
    unusable = {uid for uid, _, _ in store.excluded}
    usable = [u for u in kept if u.uid not in unusable]
    try:
        parts = split_utterances(config.split, usable)
    except ConfigError as e:
        raise ConfigError(
            f"{e} (after excluding {len(unusable)} unusable files)"
        ) from e
    split_data = {name: _split_data(store, us, tasks) for name, us in parts.items()}
    if config.data.class_weights == "balanced":
        split_data["train"] = class_balanced(split_data["train"], tasks)
    return split_data


def _per_utterance_statistics(split_data: dict, mode: str) -> dict:
    """Each split with its utterances' own statistics (band_stats) under a
    per-utterance data.normalisation ("speaker", "utterance")."""
    if mode not in statistics.PER_UTTERANCE:
        return split_data
    return {
        name: dataclasses.replace(
            part, band_stats=statistics.split_statistics(part, mode)
        )
        for name, part in split_data.items()
    }


def _train_copies(config, kept, train: SplitData, verbose) -> SplitData:
    """The train split with its waveform stores (data.features_on_device: the
    log-mels of training crops made on device) or speed copies."""
    if config.data.features_on_device:
        waves = waveform_copies(kept, train, config, verbose=verbose)
        return dataclasses.replace(train, waveforms=waves)
    if config.data.speed_factors:
        copies = speed_copies(kept, train, config, verbose=verbose)
        return dataclasses.replace(train, speed_copies=copies)
    return train


def split_utterances(split_cfg, utterances) -> dict:
    """The single split (split.protocol "holdout" or "corpus") of utterances:
    "train"/"val"/"test" -> their Utterances (splits.holdout_split)."""
    if split_cfg.protocol == "corpus":
        return splits.corpus_split(utterances)
    return splits.holdout_split(
        utterances,
        splits.parse_speakers(split_cfg.val_speakers),
        splits.parse_speakers(split_cfg.test_speakers),
    )


def labelled(utterances, task) -> list:
    """The utterances with a label of `task` (the main task: the others are
    dropped, as build_data drops them)."""
    return [u for u in utterances if _has_label(task, u)]


def speed_copies(utterances, split: SplitData, config, *, verbose=True) -> tuple:
    """The SpeedCopy of `split` for each of config.data.speed_factors.

    Each copy's store holds the whole corpus (`utterances`, as the original's),
    so cross-validation folds share it; it is built as the original is, unusable
    files excluded (or failing) alike.
    """
    factors = config.data.speed_factors
    return _copies(utterances, split, config, factors, cache.LOG_MEL, verbose)


def waveform_copies(utterances, split: SplitData, config, *, verbose=True) -> tuple:
    """SplitData.waveforms of `split`: the original's, then each speed factor's.

    Built as speed_copies are (the whole corpus, the same exclusions). The
    original's holds every utterance of the log-mel store, which it mirrors.
    """
    factors = (1.0, *config.data.speed_factors)
    copies = _copies(utterances, split, config, factors, cache.WAVEFORM, verbose)
    if np.any(copies[0].rows < 0):
        raise ValueError(
            f"waveform store {copies[0].store.directory} lacks utterances of the "
            "log-mel store; delete it to rebuild it"
        )
    return copies


def _copies(utterances, split, config, factors, kind, verbose) -> tuple:
    """The SpeedCopy of `split` in a store of `kind` for each factor."""
    copies = []
    for factor in factors:
        store = cache.build_cache(
            utterances,
            config.features,
            bad_audio=config.data.bad_audio,
            verbose=verbose,
            speed=float(factor),
            kind=kind,
        )
        rows = np.array([store.row_of.get(uid, -1) for uid in split.uids], np.int64)
        missing = int(np.sum(rows < 0))
        if verbose and missing:
            print(
                f"Speed {factor:g}: {missing} utterances unusable at this speed "
                "train on their original only",
                flush=True,
            )
        copies.append(SpeedCopy(float(factor), store, rows))
    return tuple(copies)


def check_main_classes(train: Sequence, task) -> None:
    """Refuses a main classification task with a class no training utterance has.

    Args:
      train: the training split's Utterances.
      task: the main task.

    Raises:
      ConfigError: naming the field and the training utterances per class.
    """
    if task.kind != tasks_lib.CLASSIFICATION:
        return
    said = collections.Counter(u.labels.get(task.label_key) for u in train)
    counts = [said[c] for c in task.classes]
    empty = [c for c, n in zip(task.classes, counts, strict=True) if n == 0]
    if empty:
        field = "emotion_classes" if task.name == "emotion" else f"task {task.name}"
        listing = ", ".join(
            f"{c} {n}" for c, n in zip(task.classes, counts, strict=True)
        )
        raise ConfigError(
            f"{field}: no training utterance of {', '.join(map(repr, empty))} "
            f"(training utterances per class: {listing}); choose classes the "
            "corpus has"
        )


def write_excluded(workdir: str, data: Data) -> "str | None":
    """Writes `<workdir>/excluded.tsv` (uid, path, reason) if any were excluded.

    Otherwise removes an excluded.tsv left by an earlier run on other files.

    Returns:
      The file's path, or None when nothing was excluded.
    """
    path = os.path.join(workdir, "excluded.tsv")
    if not data.excluded:
        if os.path.exists(path):
            os.remove(path)
        return None
    with open(path + ".tmp", "w") as f:
        f.write("uid\tpath\treason\n")
        for row in data.excluded:
            f.write("\t".join(re.sub(r"[\t\r\n]", " ", str(v)) for v in row) + "\n")
    os.replace(path + ".tmp", path)
    return path


def _has_label(task, utterance) -> bool:
    value = utterance.labels.get(task.label_key)
    if task.kind == tasks_lib.CLASSIFICATION:
        return value in task.classes
    return value is not None


def _split_data(store, utterances, tasks) -> SplitData:
    labels, masks = tasks_lib.encode_labels(tasks, utterances)
    rows = np.array([store.row_of[u.uid] for u in utterances], np.int64)
    return SplitData(
        store,
        rows,
        tuple(u.uid for u in utterances),
        tuple(u.speaker for u in utterances),
        labels,
        masks,
    )


def class_balanced(split: SplitData, tasks) -> SplitData:
    """The split with each classification task's masks scaled so that every
    class weighs the same in the loss (data.class_weights="balanced").

    An utterance of class c gets weight n / (k * n_c): n labelled utterances,
    k classes present, n_c of class c. The losses are mask-weighted means
    (tasks.task_loss), so a batch's loss is the class-weighted mean, as
    torch's CrossEntropyLoss(weight=...) computes it.
    """
    masks = dict(split.masks)
    for task in tasks:
        if task.kind != tasks_lib.CLASSIFICATION:
            continue
        labelled = split.masks[task.name] > 0
        ids = split.labels[task.name]
        counts = np.bincount(ids[labelled], minlength=len(task.classes))
        present = np.count_nonzero(counts)
        weights = labelled.sum() / (present * np.maximum(counts, 1))
        masks[task.name] = np.where(labelled, weights[ids], 0.0).astype(np.float32)
    return dataclasses.replace(split, masks=masks)


def band_statistics(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and std over every frame of the split: ([F], [F])."""
    total = total_sq = 0.0
    count = 0
    for row in split.rows:
        x = np.asarray(split.store.get(row), np.float64)
        total = total + x.sum(0)
        total_sq = total_sq + np.square(x).sum(0)
        count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 1e-8))
    return mean.astype(np.float32), std.astype(np.float32)


def target_statistics(split: SplitData, tasks) -> dict:
    """(mean, std) of each regression task's labelled training targets."""
    stats = {}
    for task in tasks:
        if task.kind == tasks_lib.REGRESSION:
            values = split.labels[task.name][split.masks[task.name] > 0]
            if len(values) == 0:
                raise ValueError(f"task {task.name}: no training labels")
            stats[task.name] = (float(values.mean()), float(max(values.std(), 1e-6)))
    return stats
