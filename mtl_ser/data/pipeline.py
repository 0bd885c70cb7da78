"""Grain input pipelines: feature cache -> process-local numpy batches.

Training batches are cut from the feature cache by data/batches.py (one Grain
element a batch; see there for what a batch holds) and made into the model's
input in the train step (data/inputs.py). Evaluation batches hold the input
itself: `x` [B, T, F, 1] float32 normalised log-mel windows and `utt` [B] int32
(the utterance's index in its split; -1 for padding). This module knows no
devices.

Augmentation happens to training examples only: speed-perturbed copies of the
corpus (data.speed_factors, cached like the original), white noise on the crop
(data.noise_prob; see data/augment) and SpecAugment masks. Evaluation and the
normalisation statistics use the original features alone.

With data.features_on_device the training split carries waveform stores
(`SplitData.waveforms`) and its batches carry the crops' samples instead of
their log-mels, which the train step computes (features.crop_features_jnp);
the draws are the log-mel path's, so the crops are too.
"""

import collections
import dataclasses
import os
import re
from typing import Sequence

import grain
import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import batches, cache, corpora, splits, statistics
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
    protocol = config.split.protocol
    if protocol not in splits.SINGLE_SPLITS:
        raise ConfigError(
            f"split.protocol={protocol!r} is a cross-validation: run "
            "launch.py --mode=cv (--config.split.fold=i for one fold)"
        )
    utterances = corpora.load_corpus(config.corpus)
    main = tasks[0]
    kept = labelled(utterances, main)
    if verbose and len(kept) < len(utterances):
        print(unlabelled_summary(main, utterances, kept), flush=True)

    def split(us):
        return split_utterances(config.split, us)

    check_main_classes(split(kept)["train"], main)  # Both fail before caching.
    store = cache.build_cache(
        kept, config.features, bad_audio=config.data.bad_audio, verbose=verbose
    )
    unusable = {uid for uid, _, _ in store.excluded}
    usable = [u for u in kept if u.uid not in unusable]
    try:
        parts = split(usable)
    except ConfigError as e:
        raise ConfigError(
            f"{e} (after excluding {len(unusable)} unusable files)"
        ) from e
    split_data = {name: _split_data(store, us, tasks) for name, us in parts.items()}
    if config.data.class_weights == "balanced":
        split_data["train"] = class_balanced(split_data["train"], tasks)
    mean, std = band_statistics(split_data["train"])
    mode = config.data.normalisation
    if mode == "none":
        mean, std = np.zeros_like(mean), np.ones_like(std)
    if mode in statistics.PER_UTTERANCE:  # Each utterance its own statistics.
        split_data = {
            name: dataclasses.replace(
                part, band_stats=statistics.split_statistics(part, mode)
            )
            for name, part in split_data.items()
        }
    if config.data.features_on_device:  # Log-mels of training crops on device.
        waves = waveform_copies(kept, split_data["train"], config, verbose=verbose)
        split_data["train"] = dataclasses.replace(split_data["train"], waveforms=waves)
    elif config.data.speed_factors:
        copies = speed_copies(kept, split_data["train"], config, verbose=verbose)
        split_data["train"] = dataclasses.replace(
            split_data["train"], speed_copies=copies
        )
    if verbose:
        if store.excluded:
            print(excluded_summary(store.excluded, len(kept)), flush=True)
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


def unlabelled_summary(task, utterances, kept) -> str:
    """One line counting the utterances left out for want of a main-task label.

    E.g. "Left out 196 of 535 utterances without a label among the classes of
    task emotion: boredom 81, fear 69, disgust 46".
    """
    kept_ids = {u.uid for u in kept}
    labels = collections.Counter(
        str(u.labels.get(task.label_key, "(none)"))
        for u in utterances
        if u.uid not in kept_ids
    )
    counts = ", ".join(f"{label} {n}" for label, n in labels.most_common())
    return (
        f"Left out {len(utterances) - len(kept)} of {len(utterances)} utterances "
        f"without a label among the classes of task {task.name}: {counts}"
    )


def excluded_summary(excluded: Sequence[tuple], total: int) -> str:
    """One line counting the excluded files by kind of problem.

    E.g. "Excluded 3 of 51 audio files as unusable (see excluded.tsv): truncated
    WAV file (2), empty file (1)".

    Args:
      excluded: (uid, path, reason) tuples, as Data.excluded.
      total: the number of files there were.
    """
    # The kind is the reason without its particulars: "empty file (0 bytes)".
    kinds = collections.Counter(
        re.split(r" \(|;", reason)[0] for _, _, reason in excluded
    )
    counts = ", ".join(f"{kind} ({n})" for kind, n in kinds.most_common())
    return (
        f"Excluded {len(excluded)} of {total} audio files as unusable "
        f"(see excluded.tsv): {counts}"
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


READ_AHEAD_PER_THREAD = 4  # Batches made ahead per read thread.
# Grain's element count for the endless stream of batches (Grain's iterator
# state is the next element's index; 2**62 steps are never reached).
_ENDLESS = 2**62


def train_dataset(
    split: SplitData,
    data: Data,
    *,
    crop: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    fixed: bool = False,
    read_threads: int = 1,
    table: "batches.CropTable | None" = None,
) -> grain.IterDataset:
    """Endless training batches of this process's share (data/batches.py).

    Element b is global batch b (the batch of step b + 1): its examples are
    positions b*B .. b*B + B - 1 of the endless stream of epochs, each a new
    permutation of the split, and process p takes positions p, p + P, ... of
    it, so processes see disjoint examples and together one global batch of
    `batch_size`. Nothing is dropped: a batch may hold the end of one epoch and
    the start of the next, and every example of every epoch goes to exactly one
    process once. Each example is a random crop (with `fixed`, the centre crop)
    of the utterance at a random speed (when the split has speed copies).

    `read_threads` threads make batches ahead (data.read_threads; 0: none),
    READ_AHEAD_PER_THREAD batches each.

    Args:
      table: where the crops come from (batches.crop_table of `split`, the
        default); a table of the device store (batches.device_frames) gives
        batches of store indices instead of crops.

    Returns:
      A Grain IterDataset whose iterator state can be checkpointed.
    """
    table = batches.crop_table(split) if table is None else table
    if not table.stores:
        output = batches.INDEX
    else:
        output = batches.AUDIO if table.waveforms else batches.DB
    make = batches.TrainBatches(
        split,
        data.target_stats,
        table,
        output=output,
        crop=crop,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        fixed=fixed,
    )
    ds = grain.MapDataset.range(_ENDLESS).map(make)
    ahead = READ_AHEAD_PER_THREAD * read_threads
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=ahead)
    return ds.to_iter_dataset(options)


def train_batch_indices(
    n: int, *, batch_size: int, seed: int, step: int, process_count: int = 1
) -> np.ndarray:
    """Split indices of the global training batch of 1-based `step`: [batch_size].

    Process p's rows come p-th, as in the global batch the step sees; the
    indices are those train_dataset gives, without reading any features.
    """
    positions = (step - 1) * batch_size + np.arange(batch_size)
    order = np.concatenate([positions[p::process_count] for p in range(process_count)])
    return batches.stream_indices(n, seed, order)


def eval_windows(
    split: SplitData, crop: int, hop: int, *, fixed: bool = False
) -> np.ndarray:
    """Windows covering every utterance whole: [W, 2] (utterance index, start).

    Starts are 0, hop, 2 hop, ... while a full window fits, plus a final window
    flush with the end; an utterance shorter than `crop` gets one padded window.
    With `fixed`, each utterance has one window: its centre crop.
    """
    lengths = split.store.lengths[split.rows]
    if fixed:
        starts = batches.centre_start(lengths, crop)
        return np.stack([np.arange(len(lengths)), starts], 1).astype(np.int64)
    last = np.maximum(lengths - crop, 0)  # The final window's start.
    count = last // hop + 1 + (last % hop > 0)  # Windows per utterance.
    utt = np.repeat(np.arange(len(lengths)), count)
    first_window = np.cumsum(count) - count
    starts = (np.arange(len(utt)) - first_window[utt]) * hop
    starts = np.minimum(starts, last[utt])
    return np.stack([utt, starts], 1).astype(np.int64)


def eval_batches(
    split: SplitData,
    data: Data,
    *,
    crop: int,
    hop: int,
    batch_size: int,
    fixed: bool = False,
):
    """window_batches of eval_windows(split, crop, hop, fixed=fixed)."""
    windows = eval_windows(split, crop, hop, fixed=fixed)
    return window_batches(split, data, windows, crop=crop, batch_size=batch_size)


def window_batches(
    split: SplitData, data: Data, windows, *, crop: int, batch_size: int
):
    """Yields full global evaluation batches {"x", "utt"} (numpy) of `windows`
    ([W, 2], as eval_windows gives them); the last is padded with zero inputs
    and `utt` = -1, which count nowhere.

    `x` is the model's input [B, T, F, 1] (batches.window_inputs).
    """
    for begin in range(0, len(windows), batch_size):
        chunk = windows[begin : begin + batch_size]
        x = batches.window_inputs(split, data, chunk, crop)
        pad = batch_size - len(chunk)
        yield {
            "x": np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]),
            "utt": np.concatenate([chunk[:, 0], np.full(pad, -1)]).astype(np.int32),
        }
