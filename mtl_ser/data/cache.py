"""Log-mel feature cache: computed once per corpus and feature config.

Layout of `<cache_dir>/<key>/`: `features.npy` holds every utterance's log-mel
frames concatenated along time ([sum T, n_mels] float32, memory-mapped for random
access by Grain) and `index.json` holds uids, offsets and lengths. The key hashes
the feature config and the corpus files (path, size, mtime), so any change
recomputes. The folder is built under a temporary name and renamed into place,
so an interrupted build is never read as complete.
"""

import json
import os
import shutil
import sys
import tempfile
from typing import Sequence

import numpy as np

from mtl_ser.data import audio, features
from mtl_ser.data.corpora.base import Utterance


class FeatureStore:
    """Random access to cached log-mels by row; picklable (for Grain workers)."""

    def __init__(self, directory: str):
        self.directory = directory
        with open(os.path.join(directory, "index.json")) as f:
            index = json.load(f)
        self.uids = tuple(index["uids"])
        self.offsets = np.asarray(index["offsets"], np.int64)
        self.lengths = np.asarray(index["lengths"], np.int64)
        self.row_of = {uid: i for i, uid in enumerate(self.uids)}
        self._frames = None

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:  # Opened lazily so that pickling stays cheap.
            path = os.path.join(self.directory, "features.npy")
            self._frames = np.load(path, mmap_mode="r")
        return self._frames

    def __getstate__(self):
        return {**self.__dict__, "_frames": None}

    def get(self, row: int) -> np.ndarray:
        """The log-mel of one utterance: [T, n_mels] float32."""
        start = self.offsets[row]
        return self.frames[start : start + self.lengths[row]]


def feature_params(cfg) -> dict:
    """The feature sub-config fields that change the features' values."""
    keys = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")
    return {k: cfg[k] for k in keys + ("top_db", "trim_top_db")}


def _corpus_fingerprint(utterances: Sequence[Utterance]) -> list:
    out = []
    for u in sorted(utterances, key=lambda u: u.uid):
        st = os.stat(u.path)
        out.append([u.uid, u.path, st.st_size, st.st_mtime_ns])
    return out


def utterance_features(path: str, cfg) -> np.ndarray:
    """Decode, resample, trim and log-mel one file: [T, n_mels] float32."""
    wave = audio.load_audio(path, cfg.sample_rate)
    wave = audio.trim_silence(wave, cfg.trim_top_db, cfg.n_fft, cfg.hop_length)
    return features.log_mel(
        wave,
        sample_rate=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        top_db=cfg.top_db,
    )


def build_cache(utterances: Sequence[Utterance], cfg, *, verbose=True) -> FeatureStore:
    """Returns the feature store for these utterances, computing it if needed.

    Args:
      utterances: the corpus (all splits: features do not depend on the split).
      cfg: the `features` sub-config.
      verbose: print one line when building.

    Returns:
      A FeatureStore whose rows follow the order of `utterances`.
    """
    key = features.feature_config_key(
        {"features": feature_params(cfg), "corpus": _corpus_fingerprint(utterances)}
    )
    final = os.path.join(cfg.cache_dir, key)
    if os.path.exists(os.path.join(final, "index.json")):
        return FeatureStore(final)
    os.makedirs(cfg.cache_dir, exist_ok=True)
    if verbose:
        print(f"Computing log-mels of {len(utterances)} files into {final}", flush=True)
    tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=cfg.cache_dir)
    try:
        mels = [utterance_features(u.path, cfg) for u in utterances]
        lengths = [len(m) for m in mels]
        np.save(os.path.join(tmp, "features.npy"), np.concatenate(mels, 0))
        index = {
            "uids": [u.uid for u in utterances],
            "offsets": np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist(),
            "lengths": lengths,
            "features": feature_params(cfg),
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
        print(f"Cached {sum(lengths)} frames", file=sys.stdout, flush=True)
    return FeatureStore(final)
