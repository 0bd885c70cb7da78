"""Speed perturbation and white noise for small corpora (data/augment)."""

import dataclasses
import json
import math
import os

import jax
import librosa
import numpy as np
import pytest

from mtl_ser.data import augment, cache, corpora, features, pipeline, run_data
from mtl_ser.data.voice import synth
from mtl_ser.errors import ConfigError
from mtl_ser.training import checks, loop
from tests.data.common import TASKS, padded_window

SR = 16_000
MEL = dict(sample_rate=SR, n_fft=512, n_mels=64, fmin=50.0, fmax=8_000.0)
LOG_MEL = dict(MEL, hop_length=160, top_db=80.0)
FACTORS = (0.8, 1.25)


def _tone(seconds=2.0, hz=440.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _speech():
    """About 7 s of the synthetic corpus's speech-like voice (three speakers)."""
    waves = [synth.synthesize(0, s, u)[0] for s, u in ((0, 0), (1, 1), (2, 2))]
    return np.concatenate(waves).astype(np.float32)


@pytest.fixture
def speed_config(smoke_config):
    smoke_config.data.speed_factors = FACTORS
    return smoke_config


@pytest.fixture
def speed_data(speed_config):
    return run_data.build_data(speed_config, TASKS, verbose=False)


def test_speed_perturbation_shortens_and_raises_a_tone():
    wave = _tone()
    peak = {}
    for factor in (0.8, 1.0, 1.25):
        fast = augment.speed_perturb(wave, factor, SR, name="tone")
        assert fast.dtype == np.float32
        assert abs(len(fast) - len(wave) / factor) <= 2
        mel = features.log_mel(fast, **LOG_MEL)
        assert abs(len(mel) - len(wave) / factor / 160) <= 2
        peak[factor] = np.bincount(mel.argmax(1)).argmax()  # The tone's band.
    assert peak[0.8] < peak[1.0] < peak[1.25]
    centres = librosa.mel_frequencies(64 + 2, fmin=50.0, fmax=8_000.0)[1:-1]
    # 440 Hz -> 352 Hz and 550 Hz: the peak band is the one nearest.
    for factor in (0.8, 1.25):
        assert peak[factor] == np.abs(centres - 440 * factor).argmin()


def test_speed_copies_are_cached_apart_and_the_original_keeps_its_key(
    smoke_config, monkeypatch
):
    utts = corpora.load_corpus(smoke_config.corpus)
    cfg = smoke_config.features
    original = cache.build_cache(utts, cfg, verbose=False)
    key = features.feature_config_key(
        {
            "features": cache.feature_params(cfg),
            "corpus": cache._corpus_fingerprint(utts),
        }
    )
    assert os.path.basename(original.directory) == key  # As before speed existed.
    assert original.speed == 1.0
    copies = {f: cache.build_cache(utts, cfg, verbose=False, speed=f) for f in FACTORS}
    dirs = {original.directory} | {s.directory for s in copies.values()}
    assert len(dirs) == 3
    for factor, store in copies.items():
        assert store.speed == factor
        assert store.uids == original.uids
        ratio = original.lengths / store.lengths
        # Silence trimming can cut a quiet end a little differently (0.2 s in
        # 2 of 48 at 1.25), so most, not all, are within 3%.
        assert abs(np.median(ratio) - factor) < 0.02
        assert np.mean(np.abs(ratio / factor - 1) < 0.03) >= 0.9
        with open(os.path.join(store.directory, "index.json")) as f:
            assert json.load(f)["features"]["speed"] == factor

    def fail(*args, **kwargs):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(cache, "utterance_features", fail)
    again = cache.build_cache(utts, cfg, verbose=False, speed=FACTORS[1])
    assert again.directory == copies[FACTORS[1]].directory  # A cache hit.


def _copy_of(window, split, i, crop):
    """The speed factors whose log-mel of utterance i holds the crop `window`."""
    candidates = {1.0: split.store.get(split.rows[i])}
    for copy in split.speed_copies:
        candidates[copy.factor] = copy.store.get(copy.rows[i])
    found = set()
    for factor, mel in candidates.items():
        for start in range(max(len(mel) - crop, 0) + 1):
            if np.array_equal(padded_window(mel, start, crop), window):
                found.add(factor)
                break
    return found


def test_training_draws_every_copy_and_evaluation_only_the_original(
    speed_data, smoke_config
):
    split = speed_data.splits["train"]
    assert [c.factor for c in split.speed_copies] == list(FACTORS)
    assert all(not s.speed_copies for n, s in speed_data.splits.items() if n != "train")
    kw = dict(crop=64, batch_size=8, seed=5)
    seen = []
    it = iter(pipeline.train_dataset(split, speed_data, **kw))
    batches = [next(it) for _ in range(6)]
    for batch in batches:
        for db, i in zip(batch["db"], batch["utt"], strict=True):
            found = _copy_of(db, split, int(i), 64)
            assert len(found) == 1, found
            seen.extend(found)
    assert set(seen) == {1.0, *FACTORS}
    again = iter(pipeline.train_dataset(split, speed_data, **kw))
    for batch in batches:  # The same seed, the same batches.
        np.testing.assert_array_equal(next(again)["db"], batch["db"])

    # Statistics and evaluation are those of the original features alone.
    plain = run_data.build_data(smoke_config, TASKS, verbose=False)
    np.testing.assert_array_equal(speed_data.mean, plain.mean)
    np.testing.assert_array_equal(speed_data.std, plain.std)
    for name in ("train", "val"):
        ev = dict(crop=64, hop=32, batch_size=16)
        got = pipeline.eval_batches(speed_data.splits[name], speed_data, **ev)
        want = pipeline.eval_batches(plain.splits[name], plain, **ev)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a["x"], b["x"])


def test_a_copy_without_the_utterance_falls_back_to_the_original(speed_data):
    split = speed_data.splits["train"]
    gone = tuple(
        dataclasses.replace(c, rows=np.full_like(c.rows, -1))
        for c in split.speed_copies
    )
    split = dataclasses.replace(split, speed_copies=gone)
    it = iter(pipeline.train_dataset(split, speed_data, crop=64, batch_size=8, seed=0))
    for _ in range(3):
        batch = next(it)
        for db, i in zip(batch["db"], batch["utt"], strict=True):
            assert _copy_of(db, split, int(i), 64) == {1.0}


def test_white_noise_band_statistics_match_real_white_noise():
    bands = augment.white_noise_bands(**MEL)
    noise = np.random.default_rng(0).standard_normal(60 * SR).astype(np.float32)
    db = features.log_mel(noise, **dict(LOG_MEL, top_db=None))[2:-2]  # Full frames.
    power = np.power(10.0, db.astype(np.float64) / 10.0)
    # 6000 overlapping frames: a band's mean is good to ~1.3% (one std), its
    # variance to ~3%; over the 64 bands, errors average out.
    mean_ratio = power.mean(0) / bands.power
    np.testing.assert_allclose(mean_ratio, 1.0, rtol=0.06)
    assert abs(mean_ratio.mean() - 1.0) < 0.01
    shape_ratio = np.square(power.mean(0)) / power.var(0) / bands.shape
    np.testing.assert_allclose(shape_ratio, 1.0, rtol=0.12)
    assert abs(shape_ratio.mean() - 1.0) < 0.02
    assert bands.shape.min() < 2 < 6 < bands.shape.max()  # Narrow vs wide bands.
    # bands.hz turns band powers into power per Hz: exact inside the mel range.
    basis = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=50.0, fmax=8e3)
    edges = librosa.mel_frequencies(66, fmin=50.0, fmax=8_000.0)
    bins = np.arange(257) * SR / 512
    inside = (bins >= edges[1]) & (bins <= edges[-2])
    np.testing.assert_allclose((bands.hz @ basis)[inside], 1.0, rtol=1e-5)


def _mean_db_error(wave, snr_db, bands, seeds=3):
    """Per band, mean dB of log_mel(wave + white noise) minus add_noise's."""
    clean = features.log_mel(wave, **LOG_MEL)
    rng = np.random.default_rng(1)
    sigma = math.sqrt(np.mean(np.square(wave, dtype=np.float64)) * 10 ** (-snr_db / 10))
    truth, ours = [], []
    for _ in range(seeds):
        noisy = wave + sigma * rng.standard_normal(len(wave)).astype(np.float32)
        truth.append(features.log_mel(noisy, **LOG_MEL))
        key = jax.random.key(int(rng.integers(2**31)))
        snr = np.array([snr_db], np.float32)
        noisy = augment.add_mel_noise(clean[None], snr, bands, key, top_db=80.0)
        ours.append(np.asarray(noisy)[0])
    return np.concatenate(truth).mean(0) - np.concatenate(ours).mean(0)  # [F]


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
@pytest.mark.parametrize("source", ["tone", "speech"])
def test_mel_domain_noise_matches_noise_added_to_the_waveform(source, snr_db):
    """Measured: at most 0.46 dB in any band, 0.16 dB averaged over the bands."""
    wave = {"tone": lambda: _tone(4.0), "speech": _speech}[source]()
    bands = augment.white_noise_bands(**MEL)
    error = _mean_db_error(wave, snr_db, bands)
    assert np.abs(error).max() <= 0.75
    assert np.abs(error).mean() <= 0.25
    # The per-bin spread matters: noise at its mean power alone is ~1.7 dB off.
    steady = dataclasses.replace(bands, shape=np.full_like(bands.shape, 1e9))
    assert np.abs(_mean_db_error(wave, snr_db, steady)).max() > 1.0


def test_noise_prob_zero_changes_nothing_and_one_adds_to_every_crop(smoke_config):
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    split, kw = data.splits["train"], dict(crop=64, batch_size=8, seed=2)
    plain = next(iter(pipeline.train_dataset(split, data, **kw)))["db"]
    bands = augment.white_noise_bands(**MEL)
    never = augment.MelNoise(0.0, (5.0, 20.0), bands, 80.0)
    always = augment.MelNoise(1.0, (5.0, 20.0), bands, 80.0)
    key = jax.random.key(0)
    np.testing.assert_array_equal(np.asarray(never.on_log_mels(plain, key)), plain)
    noisy = np.asarray(always.on_log_mels(plain, key))
    assert np.all(noisy >= plain - 1e-4)  # Noise adds power; the crops are kept.
    assert np.all(np.mean(noisy > plain + 1e-3, axis=(1, 2)) > 0.05)
    half = augment.MelNoise(0.5, (5.0, 20.0), bands, 80.0)
    changed = [
        np.any(np.asarray(half.on_log_mels(plain, jax.random.key(k))) != plain, (1, 2))
        for k in range(8)
    ]
    assert 0.25 < np.mean(changed) < 0.75  # About half the crops, per draw.
    smoke_config.data.noise_prob = 0.5
    made = augment.make_noise(smoke_config.data, smoke_config.features)
    assert made.prob == 0.5 and made.snr_db == (5.0, 20.0) and made.top_db == 80.0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("speed_factors", (0.9, 1.0), "leave out 1.0"),
        ("speed_factors", (0.3, 1.1), r"0.3 is outside \[0.5, 2.0\]"),
        ("speed_factors", (1.1, 1.1), "listed twice"),
        ("speed_factors", ("fast",), "a tuple of numbers"),
        ("noise_prob", 1.5, r"must be in \[0, 1\]"),
        ("noise_prob", -0.1, r"must be in \[0, 1\]"),
        ("noise_snr_db", (20.0, 5.0), "lo 20.0 is above hi 5.0"),
        ("noise_snr_db", (5.0,), r"a \(lo, hi\) pair"),
    ],
)
def test_config_checks_name_the_augmentation_field(smoke_config, field, value, message):
    checks.validate_config(smoke_config)
    smoke_config.data[field] = value
    with pytest.raises(ConfigError, match=f"^data.{field}=.*{message}"):
        checks.validate_config(smoke_config)


def test_smoke_training_with_speed_and_noise_runs_and_stays_finite(
    speed_config, tmp_path
):
    speed_config.data.noise_prob = 0.5
    speed_config.data.time_masks = 1
    workdir = str(tmp_path / "run")
    results = loop.train_and_evaluate(speed_config, workdir)
    assert results["step"] == speed_config.train.num_steps
    assert all(math.isfinite(v) for v in results["scalars"].values())
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [json.loads(x).get("train/loss/total") for x in f]
    losses = [v for v in losses if v is not None]
    assert losses and all(math.isfinite(v) for v in losses)
    speeds = set()
    for name in os.listdir(speed_config.features.cache_dir):
        index = os.path.join(speed_config.features.cache_dir, name, "index.json")
        if os.path.exists(index):
            with open(index) as f:
                speeds.add(json.load(f)["features"].get("speed", 1.0))
    assert set(FACTORS) <= speeds
