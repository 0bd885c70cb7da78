"""Log-mel feature cache: computed once per corpus and feature config.

Layout of `<cache_dir>/<key>/`: `features.npy` holds every utterance's log-mel
frames concatenated along time ([sum T, n_mels] float32, memory-mapped for random
access by Grain) and `index.json` holds uids, offsets and lengths. The key hashes
the feature config and the corpus files (path, size, mtime), so any change
recomputes. A speed-perturbed copy of the corpus (augment.speed_perturb) is a
store of its own, keyed also by its factor. Files whose audio cannot be used
(`audio.AudioError`) are left out of the store and listed with their reasons in
`index.json`, so that a cache hit reports the same exclusions as the build did.

A waveform store (data.features_on_device: training computes its log-mels on
device) is a store of its own too, keyed also by its kind, with the same files
left out: `features.npy` holds the concatenated waveforms ([sum N] float32)
whose log-mels the log-mel store holds, and `index.json` also each utterance's
maximum and minimum log-mel (`peak_db`, `floor_db`), which on-device crops need
for top_db clipping and padding.

The folder is built under a temporary name and renamed into place, so an
interrupted build is never read as complete. The temporary name carries the
builder's host and pid: a build removes those left by dead processes of its host
(killed with -9, out of memory) and never those of a live one.
"""

import json
import os
import re
import shutil
import socket
import sys
import tempfile
from typing import Sequence

import numpy as np
import tqdm

from mtl_ser.data import audio, augment, features
from mtl_ser.data.corpora.base import Utterance

# What build_cache does with an unusable file (config field data.bad_audio).
BAD_AUDIO_POLICIES = ("exclude", "fail")

# What a store holds per utterance: its log-mel [T, n_mels], or its waveform [N]
# (the decoded, resampled, trimmed samples the log-mel is computed from).
LOG_MEL, WAVEFORM = "log_mel", "waveform"
STORE_KINDS = (LOG_MEL, WAVEFORM)

_HOST = socket.gethostname()


class FeatureStore:
    """Random access to cached log-mels (or waveforms) by row; picklable.

    Attributes of a waveform store (`kind` WAVEFORM) besides the rows: `peak_db`
    and `floor_db`, [N] float32 maximum and minimum of each row's log-mel;
    `params`, the feature settings the store was built with.
    """

    def __init__(self, directory: str):
        self.directory = directory
        with open(os.path.join(directory, "index.json")) as f:
            index = json.load(f)
        self.uids = tuple(index["uids"])
        self.offsets = np.asarray(index["offsets"], np.int64)
        self.lengths = np.asarray(index["lengths"], np.int64)
        self.row_of = {uid: i for i, uid in enumerate(self.uids)}
        # (uid, path, reason) of each file left out, in corpus order; caches
        # written before exclusions existed had none.
        self.excluded = tuple(tuple(e) for e in index.get("excluded", ()))
        self.params = dict(index["features"])
        self.speed = float(self.params.get("speed", 1.0))
        self.kind = self.params.get("store", LOG_MEL)
        self.peak_db = np.asarray(index.get("peak_db", ()), np.float32)
        self.floor_db = np.asarray(index.get("floor_db", ()), np.float32)
        self._frames = None
        self._floors = None

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:  # Opened lazily so that pickling stays cheap.
            path = os.path.join(self.directory, "features.npy")
            self._frames = np.load(path, mmap_mode="r")
        return self._frames

    @property
    def floors(self) -> np.ndarray:
        """[rows] float32 each log-mel row's minimum: the padding of its crops.

        Computed on first use, in one pass over the store.
        """
        if self._floors is None:
            self._floors = np.minimum.reduceat(np.min(self.frames, 1), self.offsets)
        return self._floors

    def __getstate__(self):
        return {**self.__dict__, "_frames": None}

    def get(self, row: int) -> np.ndarray:
        """One utterance's log-mel [T, n_mels] (or waveform [N]), float32."""
        start = self.offsets[row]
        return self.frames[start : start + self.lengths[row]]


def feature_params(cfg) -> dict:
    """The feature sub-config fields that change the features' values."""
    keys = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")
    return {k: cfg[k] for k in keys + ("top_db", "trim_top_db")}


def store_params(cfg, speed: float = 1.0, kind: str = LOG_MEL) -> dict:
    """feature_params, plus the speed factor of a perturbed copy and the kind.

    The factor is left out at 1.0 and the kind for log-mels, so that the
    original features keep the key they had before speed perturbation and
    waveform stores existed.
    """
    params = feature_params(cfg)
    if speed != 1.0:
        params["speed"] = float(speed)
    if kind != LOG_MEL:
        params["store"] = kind
    return params


def _corpus_fingerprint(utterances: Sequence[Utterance]) -> list:
    out = []
    for u in sorted(utterances, key=lambda u: u.uid):
        try:
            st = os.stat(u.path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:  # A missing file is excluded by the build, which says why.
            size = mtime = None
        out.append([u.uid, u.path, size, mtime])
    return out


def utterance_features(path: str, cfg, speed: float = 1.0) -> np.ndarray:
    """Decode, resample, trim and log-mel one file: [T, n_mels] float32.

    With `speed` != 1, the waveform is first played `speed` times faster
    (augment.speed_perturb), so T is about the original's / speed.

    Raises:
      audio.AudioError: the file cannot be used; the message names it.
    """
    return waveform_features(_decode(path, cfg, speed), cfg, name=path)


def utterance_waveform(path: str, cfg, speed: float = 1.0) -> tuple:
    """The trimmed waveform whose log-mel utterance_features returns, and that.

    Returns:
      ([N] float32 samples, [T, n_mels] float32 log-mel), T the frames of N.

    Raises:
      audio.AudioError: as utterance_features.
    """
    return _trimmed_features(_decode(path, cfg, speed), cfg, name=path)


def _decode(path: str, cfg, speed: float) -> np.ndarray:
    """The file's samples at cfg.sample_rate, played `speed` times faster."""
    wave = audio.load_audio(path, cfg.sample_rate)
    if speed != 1.0:
        wave = augment.speed_perturb(wave, speed, cfg.sample_rate, name=path)
    return wave


def waveform_features(wave: np.ndarray, cfg, *, name: str) -> np.ndarray:
    """Trim and log-mel a waveform at `cfg.sample_rate`: [T, n_mels] float32.

    Args:
      wave: [N] float32 mono samples at cfg.sample_rate (as audio.load_audio
        returns them).
      cfg: the `features` sub-config.
      name: what the waveform is (its file), for error messages.

    Raises:
      audio.AudioError: the features are not finite; the message names `name`.
    """
    return _trimmed_features(wave, cfg, name=name)[1]


def _trimmed_features(wave: np.ndarray, cfg, *, name: str) -> tuple:
    """(trimmed waveform, its log-mel); see waveform_features."""
    with np.errstate(over="ignore", invalid="ignore"):  # Reported below.
        wave = audio.trim_silence(wave, cfg.trim_top_db, cfg.n_fft, cfg.hop_length)
        mel = features.log_mel(
            wave,
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
            top_db=cfg.top_db,
        )
    # Finite float samples far outside [-1, 1] overflow the float32 power.
    if not np.all(np.isfinite(mel)):
        peak = float(np.max(np.abs(wave)))
        raise audio.AudioError(
            f"{name}: non-finite log-mel features (peak |sample| {peak:.3g})"
        )
    return wave, mel


def build_cache(
    utterances: Sequence[Utterance],
    cfg,
    *,
    bad_audio="exclude",
    verbose=True,
    speed: float = 1.0,
    kind: str = LOG_MEL,
) -> FeatureStore:
    """Returns the feature store for these utterances, computing it if needed.

    A file that cannot be used (see `utterance_features`) is left out of the
    store and listed in `store.excluded`, on a cache hit as on the build.

    Args:
      utterances: the corpus (all splits: features do not depend on the split).
      cfg: the `features` sub-config.
      bad_audio: "exclude" unusable files, or "fail" on the first one.
      verbose: print one line when building.
      speed: the speed factor of a perturbed copy (see utterance_features);
        1.0 is the original corpus.
      kind: LOG_MEL, or WAVEFORM for the trimmed waveforms the log-mels are
        computed from (utterance_waveform), with their peak and floor dB; the
        same files are excluded from both.

    Returns:
      A FeatureStore with one row per usable utterance, in their order.

    Raises:
      audio.AudioError: naming the file: `bad_audio` is "fail" and a file is
        unusable, or no file is usable.
    """
    _check_arguments(utterances, bad_audio, speed, kind)
    key = features.feature_config_key(
        {
            "features": store_params(cfg, speed, kind),
            "corpus": _corpus_fingerprint(utterances),
        }
    )
    final = os.path.join(cfg.cache_dir, key)
    if not os.path.exists(os.path.join(final, "index.json")):
        fail = bad_audio == "fail"
        _build(utterances, cfg, final, speed, kind, fail=fail, verbose=verbose)
    store = FeatureStore(final)
    if bad_audio == "fail" and store.excluded:
        _, path, reason = store.excluded[0]
        raise audio.AudioError(
            f"{path}: {reason} (recorded in the feature cache {final}; "
            "data.bad_audio='fail')"
        )
    return store


def _check_arguments(utterances, bad_audio: str, speed: float, kind: str) -> None:
    if bad_audio not in BAD_AUDIO_POLICIES:
        raise ValueError(
            f"data.bad_audio={bad_audio!r}: choose one of {BAD_AUDIO_POLICIES}"
        )
    if not utterances:
        raise ValueError("build_cache: no utterances to compute features of")
    if not speed > 0:
        raise ValueError(f"build_cache: speed factor {speed}: must be > 0")
    if kind not in STORE_KINDS:
        raise ValueError(f"build_cache: kind={kind!r}: choose one of {STORE_KINDS}")


def _build(
    utterances, cfg, final: str, speed: float, kind: str, *, fail: bool, verbose: bool
):
    """Computes the store into a temporary folder, then renames it to `final`."""
    os.makedirs(cfg.cache_dir, exist_ok=True)
    _remove_dead_builds(cfg.cache_dir)
    if verbose:
        at = f" at speed {speed:g}" if speed != 1.0 else ""
        what = "log-mels" if kind == LOG_MEL else "waveforms"
        print(
            f"Computing {what} of {len(utterances)} files{at} into {final}",
            flush=True,
        )
    mels, uids, stats, excluded = _compute(
        utterances, cfg, speed, kind, fail=fail, progress=verbose
    )
    lengths = [len(m) for m in mels]
    key = os.path.basename(final)
    tmp = tempfile.mkdtemp(prefix=f".{key}-{_HOST}-{os.getpid()}-", dir=cfg.cache_dir)
    try:
        np.save(os.path.join(tmp, "features.npy"), np.concatenate(mels, 0))
        index = {
            "uids": uids,
            "offsets": np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist(),
            "lengths": lengths,
            "excluded": excluded,
            "features": store_params(cfg, speed, kind),
            **stats,
        }
        with open(os.path.join(tmp, "index.json"), "w") as f:
            json.dump(index, f)
        try:
            os.replace(tmp, final)
        except OSError:  # Another process finished the same cache first.
            if not os.path.exists(os.path.join(final, "index.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        left_out = f"; {len(excluded)} unusable files left out" if excluded else ""
        unit = "frames" if kind == LOG_MEL else "samples"
        print(f"Cached {sum(lengths)} {unit}{left_out}", file=sys.stdout, flush=True)


def _compute(utterances, cfg, speed: float, kind: str, *, fail: bool, progress=False):
    """The usable files' rows and uids, per-row stats, and the rest's reasons.

    `progress` shows a bar with the files done and the time left (stderr).

    Returns:
      (arrays, uids, stats, excluded): stats maps index.json keys to one value
      per row (waveform stores: peak_db and floor_db; log-mels: none), and
      excluded lists [uid, path, reason].
    """
    rows, uids, excluded = [], [], []
    stats = {} if kind == LOG_MEL else {"peak_db": [], "floor_db": []}
    # The original's call stays utterance_features(path, cfg), as wrappers expect.
    extra = {} if speed == 1.0 else {"speed": speed}
    bar = tqdm.tqdm(utterances, unit="file", disable=not progress, dynamic_ncols=True)
    for u in bar:
        try:
            if kind == LOG_MEL:
                rows.append(utterance_features(u.path, cfg, **extra))
            else:
                wave, mel = utterance_waveform(u.path, cfg, **extra)
                rows.append(wave)
                stats["peak_db"].append(float(mel.max()))
                stats["floor_db"].append(float(mel.min()))
            uids.append(u.uid)
        except audio.AudioError as e:
            if fail:
                raise
            excluded.append([u.uid, u.path, _reason(e, u.path)])
    if not rows:
        _, path, reason = excluded[0]
        raise audio.AudioError(
            f"none of the {len(utterances)} audio files is usable; "
            f"the first: {path}: {reason}"
        )
    return rows, uids, stats, excluded


def _reason(error: audio.AudioError, path: str) -> str:
    """The problem alone, on one line: the message without its leading path."""
    text = str(error)
    if text.startswith(f"{path}: "):
        text = text[len(path) + 2 :]
    return " ".join(text.split())


def _remove_dead_builds(cache_dir: str):
    """Removes the temporary folders of this host's builds that were killed."""
    if os.name != "posix":  # os.kill(pid, 0) probes a process only on POSIX.
        return
    pattern = re.compile(rf"\.[0-9a-f]+-{re.escape(_HOST)}-(\d+)-[^-]*$")
    for name in os.listdir(cache_dir):
        match = pattern.match(name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, and another user's.
        return True
    return True
