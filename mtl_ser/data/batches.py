"""Batches cut from a feature store by index arithmetic: no per-example Python.

A training batch is one Grain element (`TrainBatches`, mapped over the global
batch index), made in three vectorised steps:
  1. its examples: positions b*B .. b*B + B - 1 of the endless stream of epochs,
     each epoch a seeded permutation of the split (`epoch_order`); process p of
     P takes positions p, p + P, ... of each global batch;
  2. its draws, from one numpy generator per global batch (so they do not
     depend on the number of processes): each example's speed copy (uniform
     over the original and `data.speed_factors`; none drawn without copies)
     and its crop's start (uniform over the starts that fit; the centre with
     data.inputs="fixed");
  3. its crops: one gather per store from the memory-mapped cache
     (`gather_frames`), or, with the training split resident on the device
     (data.device_cache), only the indices the train step gathers them with.
Noise, normalisation and SpecAugment are batch operations in the train step
(data/inputs.py), drawn from the step's key.

A training batch holds `labels`, `masks` (task name -> [b]) and `utt` ([b]
int32, the utterance's index in its split); with a per-utterance
data.normalisation, `mean` and `std` ([b, F] float32, the statistics that
standardise each example: data/statistics.py); and, by `output`:
  - DB: `db` [b, T, F] float32 log-mel crops in dB, frames past an utterance's
    end holding its minimum (its "floor");
  - INDEX: `first` [b] int32, the crop's first frame in the device store
    (`device_frames`), `frames` [b] int32, how many of its T frames lie inside
    the utterance, and `floor` [b] float32;
  - AUDIO (data.features_on_device): `audio` [b, S] float32, the samples under
    the crop's frames (features.crop_samples), `peak_db` and `floor_db` [b],
    the utterance's maximum and minimum log-mel, `frames` [b] int32, and `real`
    [b, 2] int32, the samples [lo, hi) of the crop that are the utterance's own
    (the rest is librosa's centring padding).
"""

import dataclasses

import grain
import numpy as np

from mtl_ser.data import features

DB, INDEX, AUDIO = "db", "index", "audio"

# Spawn keys of the generators: one per epoch's order, one per batch's draws.
_ORDER, _DRAWS = 0, 1


def centre_start(length, crop: int):
    """Start of the centre window of `crop` frames (0 when the utterance is short).

    Works on ints and on arrays of lengths.
    """
    return np.maximum(length - crop, 0) // 2


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The split indices of epoch `epoch`: a permutation of range(n) from `seed`."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_ORDER, epoch))
    return np.random.default_rng(sequence).permutation(n)


def stream_indices(n: int, seed: int, positions: np.ndarray) -> np.ndarray:
    """Split indices at `positions` of the endless stream of epochs: [len]."""
    epoch, within = np.divmod(np.asarray(positions, np.int64), n)
    out = np.empty(len(epoch), np.int64)
    for e in np.unique(epoch):
        chosen = epoch == e
        out[chosen] = epoch_order(n, seed, int(e))[within[chosen]]
    return out


def gather_frames(frames, first, valid, crop: int, floor) -> np.ndarray:
    """Crops of `crop` rows starting at `first`, padded past `valid` rows.

    Args:
      frames: [M, F] a store's frames (memory-mapped or in memory).
      first: [b] int, each crop's first row in `frames`.
      valid: [b] int >= 1, how many of its rows belong to the utterance.
      crop: rows per crop, T.
      floor: [b] the padding value of each crop (its utterance's minimum).

    Returns:
      [b, T, F] float32.
    """
    j = np.arange(crop)
    rows = np.asarray(first)[:, None] + np.minimum(j, np.asarray(valid)[:, None] - 1)
    out = np.take(frames, rows, axis=0).astype(np.float32, copy=False)
    outside = j[None, :] >= np.asarray(valid)[:, None]  # [b, T]: padding.
    if outside.any():  # Only the padded frames are written (few, usually).
        floors = np.broadcast_to(np.asarray(floor, np.float32)[:, None], outside.shape)
        out[outside] = floors[outside][:, None]
    return out


def gather_samples(wave, first, lo, hi, size: int) -> np.ndarray:
    """Windows of `size` samples from `first`, zero outside [lo, hi): [b, size].

    Args:
      wave: [M] concatenated waveforms.
      first: [b] int, each window's first position (may lie before `lo`).
      lo, hi: [b] int, the bounds of each window's own utterance in `wave`.
      size: samples per window.
    """
    pos = np.asarray(first)[:, None] + np.arange(size)  # [b, size]
    lo, hi = np.asarray(lo)[:, None], np.asarray(hi)[:, None]
    out = np.take(wave, np.clip(pos, lo, hi - 1)).astype(np.float32, copy=False)
    out[(pos < lo) | (pos >= hi)] = 0.0
    return out


@dataclasses.dataclass(frozen=True)
class CropTable:
    """Where copy k of training utterance i lives; arrays [K, N], k = 0 the
    original, then each speed copy (a copy without the utterance points at
    the original's entry).

    Attributes:
      stores: the stores of the K copies (FeatureStore, or () for a table of
        the device store, whose offsets index `device_frames`' array).
      store: [K, N] which of `stores` holds the entry.
      offset: [K, N] its first frame (log-mels) or sample (waveforms).
      length: [K, N] its frames or samples.
      frames: [K, N] its log-mel frames (what a crop start is drawn from).
      floor, peak: [K, N] float32 its minimum and maximum log-mel (dB); peak
        only for waveform stores (zeros otherwise).
      waveforms: the stores hold waveforms (data.features_on_device).
    """

    stores: tuple
    store: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    frames: np.ndarray
    floor: np.ndarray
    peak: np.ndarray
    waveforms: bool = False

    @property
    def num_copies(self) -> int:
        return self.store.shape[0]


def crop_table(split) -> CropTable:
    """The CropTable of a run_data.SplitData's utterances and speed copies."""
    if split.waveforms:
        copies = [(c.store, c.rows) for c in split.waveforms]  # [0] the original.
    else:
        copies = [(split.store, split.rows)]
        copies += [(c.store, c.rows) for c in split.speed_copies]
    fields = {k: [] for k in ("store", "offset", "length", "frames", "floor", "peak")}
    for k, (store, rows) in enumerate(copies):
        own = rows >= 0
        safe = np.where(own, rows, 0)
        length = store.lengths[safe]
        if split.waveforms:
            params = store.params
            frames = features.num_frames(length, params["n_fft"], params["hop_length"])
            floor, peak = store.floor_db[safe], store.peak_db[safe]
        else:
            frames = length
            floor, peak = store.floors[safe], np.zeros(len(rows), np.float32)
        values = (np.full(len(rows), k), store.offsets[safe], length, frames)
        for name, value in zip(fields, (*values, floor, peak), strict=True):
            original = fields[name][0] if k else value
            fields[name].append(np.where(own, value, original))
    arrays = {k: np.stack(v) for k, v in fields.items()}
    for name in ("floor", "peak"):
        arrays[name] = arrays[name].astype(np.float32)
    return CropTable(
        stores=tuple(store for store, _ in copies),
        waveforms=bool(split.waveforms),
        **arrays,
    )


def device_frames(table: CropTable, max_bytes: float) -> "tuple | None":
    """The table's log-mels as one array for the device, and its table.

    Every entry that a copy holds itself is laid out once, in (copy,
    utterance) order; entries that fall back to the original share its frames.

    Returns:
      (frames [M, F] float32, a CropTable with no stores whose offsets index
      them), or None when they would take more than `max_bytes`.
    """
    if table.waveforms:
        raise ValueError("the device store holds log-mels, not waveforms")
    own = np.zeros(table.store.shape, bool)
    own[0] = True
    own[1:] = table.store[1:] == np.arange(1, table.num_copies)[:, None]
    num_mels = table.stores[0].frames.shape[1]
    if int(table.length[own].sum()) * num_mels * 4 > max_bytes:
        return None
    offset = np.zeros_like(table.offset)
    chunks, base = [], 0
    for k in range(table.num_copies):
        frames = table.stores[k].frames
        for i in np.flatnonzero(own[k]):
            start, length = table.offset[k, i], table.length[k, i]
            chunks.append(frames[start : start + length])
            offset[k, i] = base
            base += length
        offset[k, ~own[k]] = offset[0, ~own[k]]
    resident = dataclasses.replace(
        table, stores=(), store=np.zeros_like(table.store), offset=offset
    )
    return np.concatenate(chunks).astype(np.float32, copy=False), resident


def standardised_labels(split, target_stats: dict) -> dict:
    """The split's labels, regression targets standardised as the model learns
    them (run_data.Data.target_stats)."""
    labels = dict(split.labels)
    for name, (mean, std) in target_stats.items():
        labels[name] = ((labels[name] - mean) / std).astype(np.float32)
    return labels


class TrainBatches(grain.transforms.Map):
    """Global batch index b -> this process's share of training batch b.

    Picklable (Grain's worker processes): it holds the stores, whose frames
    open lazily, and the split's labels; see the module docstring.
    """

    def __init__(
        self,
        split,
        target_stats: dict,
        table: CropTable,
        *,
        output: str,
        crop: int,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        fixed: bool = False,
    ):
        if batch_size % process_count:
            raise ValueError(
                f"data.batch_size={batch_size}: not divisible by "
                f"{process_count} processes"
            )
        if (output == AUDIO) != table.waveforms:
            raise ValueError(f"output {output!r} does not match the crop table")
        self.table, self.output, self.crop = table, output, crop
        self.batch_size, self.seed, self.fixed = batch_size, seed, fixed
        self.share = slice(process_index, None, process_count)
        self.labels = standardised_labels(split, target_stats)
        self.masks = split.masks
        self.band_stats = split.band_stats
        self.size = len(split)

    def draws(self, b: int) -> tuple:
        """Global batch b's (split indices, copies, crop starts): [B] each."""
        positions = b * self.batch_size + np.arange(self.batch_size)
        index = stream_indices(self.size, self.seed, positions)
        sequence = np.random.SeedSequence(self.seed, spawn_key=(_DRAWS, b))
        rng = np.random.default_rng(sequence)
        copy = np.zeros(self.batch_size, np.int64)
        if self.table.num_copies > 1:
            copy = rng.integers(0, self.table.num_copies, self.batch_size)
        frames = self.table.frames[copy, index]
        if self.fixed:
            start = centre_start(frames, self.crop)
        else:
            start = rng.integers(0, np.maximum(frames - self.crop, 0) + 1)
        return index, copy, start

    def map(self, b: int) -> dict:
        index, copy, start = (a[self.share] for a in self.draws(int(b)))
        t = self.table
        entry = (copy, index)
        valid = np.minimum(t.frames[entry] - start, self.crop).astype(np.int32)
        batch = {
            "labels": {k: v[index] for k, v in self.labels.items()},
            "masks": {k: v[index] for k, v in self.masks.items()},
            "utt": index.astype(np.int32),
        }
        if self.band_stats:  # Each example standardised by its own statistics.
            batch["mean"], batch["std"] = (s[index] for s in self.band_stats)
        if self.output == AUDIO:
            batch.update(self._audio(entry, start))
            batch["frames"] = valid
            return batch
        first = t.offset[entry] + start
        floor = t.floor[entry]
        if self.output == INDEX:
            batch.update(first=first.astype(np.int32), frames=valid, floor=floor)
            return batch
        batch["db"] = _per_store(
            t.store[entry],
            lambda s, mine: gather_frames(
                t.stores[s].frames, first[mine], valid[mine], self.crop, floor[mine]
            ),
        )
        return batch

    def _audio(self, entry, start) -> dict:
        """The AUDIO fields of these examples (one gather per store)."""
        t = self.table
        params = t.stores[0].params
        n_fft, hop = params["n_fft"], params["hop_length"]
        size = features.crop_num_samples(self.crop, n_fft, hop)
        lo = t.offset[entry]
        hi = lo + t.length[entry]
        first = lo + start * hop - n_fft // 2  # librosa's centring: see crop_samples.
        audio = _per_store(
            t.store[entry],
            lambda s, mine: gather_samples(
                t.stores[s].frames, first[mine], lo[mine], hi[mine], size
            ),
        )
        real = np.stack([lo - first, hi - first], 1).clip(0, size).astype(np.int32)
        return {
            "audio": audio,
            "peak_db": t.peak[entry],
            "floor_db": t.floor[entry],
            "real": real,
        }


def _per_store(stores: np.ndarray, gather) -> np.ndarray:
    """gather(store, examples) for each store the examples come from, put
    together in the examples' order; one gather when all share a store."""
    if np.all(stores == stores[0]):  # The usual case: no speed copies.
        return gather(stores[0], slice(None))
    parts = {s: gather(s, stores == s) for s in np.unique(stores)}
    some = next(iter(parts.values()))
    out = np.empty((len(stores), *some.shape[1:]), some.dtype)
    for s, part in parts.items():
        out[stores == s] = part
    return out


def window_inputs(split, data, windows: np.ndarray, crop: int) -> np.ndarray:
    """The model inputs of evaluation windows ([b, 2]: utterance index, start).

    Returns:
      [b, T, F, 1] float32 log-mels, standardised as `band_statistics` says.
    """
    utt, start = windows[:, 0], windows[:, 1]
    store = split.store
    rows = split.rows[utt]
    valid = np.minimum(store.lengths[rows] - start, crop)
    first = store.offsets[rows] + start
    db = gather_frames(store.frames, first, valid, crop, store.floors[rows])
    mean, std = band_statistics(split, data, utt)
    return ((db - mean) / std)[..., None]


def band_statistics(split, data, utt: np.ndarray) -> tuple:
    """(mean, std) that standardise the split's utterances `utt` [b]: the
    split's own per utterance ([b, 1, F] each) if it has them, else the
    training split's (run_data.Data.mean/std, [F])."""
    if not split.band_stats:
        return data.mean, data.std
    return tuple(s[utt][:, None, :] for s in split.band_stats)
