"""Which per-band statistics standardise an utterance's log-mels.

Every model input is (log-mel - mean) / std per mel band, with the statistics
that `data.normalisation` names:
  - "train": those of every frame of the training split, for every utterance
    (the default; run_data.band_statistics, saved in normalisation.json);
  - "speaker": those of every frame of the utterance's speaker in its split
    (speakers never span splits). It uses no label, but it reads a test
    speaker's audio before scoring it: it is transductive, and every output
    made with it says so (`note`);
  - "utterance": those of the utterance's own frames;
  - "none": mean 0, std 1.
The per-speaker and per-utterance statistics come from the original audio
(speed copies are standardised as their original), in one pass over the
split's frames in float64, as band_statistics computes the training split's.
"""

import numpy as np

MODES = ("train", "speaker", "utterance", "none")
# Modes whose statistics depend on the utterance (SplitData.band_stats).
PER_UTTERANCE = ("speaker", "utterance")
TRANSDUCTIVE = ("speaker",)
VARIANCE_FLOOR = 1e-8  # As band_statistics: a silent band does not divide by 0.


def utterance_sums(store, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames [N], sum [N, F], sum of squares [N, F]) of each row's log-mels,
    float64; `store` is a cache.FeatureStore or anything with its `frames`,
    `offsets` and `lengths`."""
    rows = np.asarray(rows, np.int64)
    count = np.asarray(store.lengths, np.int64)[rows]
    num_mels = store.frames.shape[1]
    total = np.zeros((len(rows), num_mels))
    total_sq = np.zeros((len(rows), num_mels))
    for i, row in enumerate(rows):
        start = int(store.offsets[row])
        x = np.asarray(store.frames[start : start + count[i]], np.float64)
        total[i], total_sq[i] = x.sum(0), np.square(x).sum(0)
    return count, total, total_sq


def group_statistics(store, rows, groups) -> tuple[np.ndarray, np.ndarray]:
    """Each utterance's band statistics over all frames of its group.

    Args:
      store: the feature store of `rows`.
      rows: [N] its rows.
      groups: [N] hashable group of each utterance (a speaker, or the
        utterance itself).

    Returns:
      (mean, std): [N, F] float32 each, row i its group's.
    """
    count, total, total_sq = utterance_sums(store, rows)
    _, group = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    group = group.reshape(-1)
    num = group.max() + 1
    sums = np.zeros((num, total.shape[1]))
    squares = np.zeros_like(sums)
    np.add.at(sums, group, total)
    np.add.at(squares, group, total_sq)
    mean, std = pooled_statistics(np.bincount(group, weights=count), sums, squares)
    return mean[group], std[group]


def pooled_statistics(count, total, total_sq) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 of frames whose count, sum and sum of squares
    (float64, per mel band; any leading axes) are given."""
    count = np.asarray(count, np.float64)[..., None]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), VARIANCE_FLOOR))
    return mean.astype(np.float32), std.astype(np.float32)


def split_statistics(split, mode: str) -> tuple:
    """SplitData.band_stats of `split` under `mode`: (mean, std) [N, F] for a
    PER_UTTERANCE mode, () otherwise."""
    if mode not in PER_UTTERANCE or not len(split.rows):
        return ()
    groups = split.speakers if mode == "speaker" else np.arange(len(split.rows))
    return group_statistics(split.store, split.rows, groups)


def is_transductive(mode: str) -> bool:
    """Whether `mode` (or any member mode of an ensemble's "a+b") reads the
    test speakers' audio for their statistics."""
    return any(m in TRANSDUCTIVE for m in mode.split("+"))


def note(mode: str) -> str:
    """One line that names a run's normalisation, and says when it is
    transductive ("" for the default, "train"). An ensemble's `mode` joins its
    members' with "+"."""
    modes = mode.split("+")
    if len(modes) > 1:
        transductive = [m for m in modes if m in TRANSDUCTIVE]
        return f"Normalisation: the members' {', '.join(modes)}" + (
            f" ({', '.join(transductive)}: transductive)" if transductive else ""
        )
    if mode == "train":
        return ""
    if mode in TRANSDUCTIVE:
        return (
            "Normalisation: speaker (each speaker's log-mels standardised by that "
            "speaker's own statistics, the test speakers' included: transductive)"
        )
    if mode == "utterance":
        return "Normalisation: utterance (each utterance by its own statistics)"
    return "Normalisation: none (log-mels in dB, not standardised)"
