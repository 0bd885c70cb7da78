"""The feature cache (data/cache): reused, keyed by config, equal to direct features."""

import os

import numpy as np
import pytest

from mtl_ser.data import cache, corpora


def test_feature_cache_is_reused_and_keyed_by_config(smoke_config, monkeypatch):
    utts = corpora.load_corpus(smoke_config.corpus)
    first = cache.build_cache(utts, smoke_config.features, verbose=False)

    def fail(*args):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(cache, "utterance_features", fail)
    again = cache.build_cache(utts, smoke_config.features, verbose=False)
    assert again.directory == first.directory
    smoke_config.features.n_mels = 40  # A new config must not hit the old cache.
    with pytest.raises(AssertionError, match="recomputed"):
        cache.build_cache(utts, smoke_config.features, verbose=False)
    leftovers = [n for n in os.listdir(smoke_config.features.cache_dir) if n[0] == "."]
    assert leftovers == []  # The failed build left no partial folder behind.


def test_cached_features_match_direct_computation(data, smoke_config):
    split = data.splits["val"]
    utt = {u.uid: u for u in corpora.load_corpus(smoke_config.corpus)}[split.uids[0]]
    direct = cache.utterance_features(utt.path, smoke_config.features)
    np.testing.assert_array_equal(split.store.get(split.rows[0]), direct)
