"""Grain input pipelines: a run's data (data/run_data.py) -> process-local
numpy batches.

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
(`run_data.SplitData.waveforms`) and its batches carry the crops' samples
instead of their log-mels, which the train step computes
(features.crop_features_jnp); the draws are the log-mel path's, so the crops
are too.
"""

import grain
import numpy as np

from mtl_ser.data import batches, run_data

READ_AHEAD_PER_THREAD = 4  # Batches made ahead per read thread.
# Grain's element count for the endless stream of batches (Grain's iterator
# state is the next element's index; 2**62 steps are never reached).
_ENDLESS = 2**62


def train_dataset(
    split: run_data.SplitData,
    data: run_data.Data,
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
    split: run_data.SplitData, crop: int, hop: int, *, fixed: bool = False
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
    split: run_data.SplitData,
    data: run_data.Data,
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
    split: run_data.SplitData,
    data: run_data.Data,
    windows,
    *,
    crop: int,
    batch_size: int,
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
