"""Training log-mels made in the jitted step from cached waveforms (issue 5).

data.features_on_device swaps the training crops' cached log-mels for the
samples under them (pipeline's docstring); the step makes the log-mels
(features.crop_features_jnp). These tests hold the two paths to the same crops
and values: within 0.01 dB before normalisation (measured here: at most 5e-4
dB, float32 rFFT against librosa's float64 one), padding past an utterance's
end included, which the device fills with the utterance's minimum as the host
does.
"""

import dataclasses
import math
import types

import chex
import jax
import numpy as np
import pytest

from mtl_ser.data import augment, batches, cache, features, inputs, pipeline, run_data
from mtl_ser.training import build, loop
from mtl_ser.training import step as step_lib
from tests.data.common import TASKS
from tests.steps import train_steps

DB_TOLERANCE = 0.01  # The promise of features.log_mel_jnp, kept for crops.
# Losses of the same steps on both paths. Measured here: equal in float32 over
# 3 steps (Adam, and SGD too), as the freshly initialised smoke model barely
# feels inputs this close (1e-3 of noise on x moves its loss by 1e-7); the
# margin is for other backends' rounding.
LOSS_RTOL = 1e-5


def _data(config, on_device: bool):
    config.data.features_on_device = on_device
    return run_data.build_data(config, TASKS, verbose=False)


def _device_x(batch, data, config):
    """The batch's model input as the train step makes it (numpy)."""
    x = features.crop_features_jnp(
        batch["audio"],
        batch["peak_db"],
        data.mean,
        data.std,
        batch["frames"],
        batch["floor_db"],
        **features.log_mel_settings(config.features),
    )
    return np.asarray(x)


def _db_difference(x, y, data):
    """Largest difference of two normalised batches, back in dB."""
    return float(np.max(np.abs(x - y)[..., 0] * data.std))


def test_waveform_store_mirrors_the_log_mel_store(smoke_config):
    host, device = _data(smoke_config, False), _data(smoke_config, True)
    mels, (waves,) = host.splits["train"], device.splits["train"].waveforms
    assert waves.factor == 1.0 and waves.store.kind == cache.WAVEFORM
    assert waves.store.directory != mels.store.directory
    assert device.splits["train"].speed_copies == ()
    assert all(not s.waveforms for n, s in device.splits.items() if n != "train")
    np.testing.assert_array_equal(device.mean, host.mean)  # Log-mels, as before.
    for i in range(len(mels)):
        mel = mels.store.get(mels.rows[i])
        row = waves.rows[i]
        n = int(waves.store.lengths[row])
        assert features.num_frames(n, 512, 160) == len(mel)
        assert waves.store.peak_db[row] == mel.max()
        assert waves.store.floor_db[row] == mel.min()


@pytest.mark.parametrize("where", ["start", "end", "short"])
def test_a_device_crop_equals_the_cached_crop(smoke_config, where):
    data = _data(smoke_config, True)
    split, (waves,) = data.splits["train"], data.splits["train"].waveforms
    lengths = [int(split.store.lengths[r]) for r in split.rows]
    crop = 100 if where != "short" else max(lengths) + 7
    i = int(np.argmin(lengths)) if where == "short" else 0
    mel = split.store.get(split.rows[i])
    start = {"start": 0, "end": len(mel) - crop, "short": 0}[where]
    wave = waves.store.get(waves.rows[i])
    samples = features.crop_samples(wave, start, crop, 512, 160)
    assert samples.shape == (features.crop_num_samples(crop, 512, 160),)
    row = waves.rows[i]
    batch = {
        "audio": samples[None],
        "peak_db": waves.store.peak_db[row : row + 1],
        "floor_db": waves.store.floor_db[row : row + 1],
        "frames": np.array([min(len(mel) - start, crop)], np.int32),
    }
    got = _device_x(batch, data, smoke_config)[0]
    want = batches.window_inputs(split, data, np.array([[i, start]]), crop)[0]
    assert got.shape == want.shape == (crop, 64, 1)
    assert _db_difference(got, want, data) <= DB_TOLERANCE


def _inputs(batch, data, config):
    """The model input the train step makes of a training batch (numpy)."""
    spec = build.input_spec(config, (data.mean, data.std))
    return np.asarray(inputs.model_inputs(batch, None, jax.random.key(0), spec))


@pytest.mark.parametrize(
    "inputs_kind, speed_factors, normalisation",
    [
        ("segments", (), "train"),
        ("segments", (1.25,), "train"),
        ("fixed", (), "train"),
        ("segments", (), "speaker"),
    ],
)
def test_training_batches_hold_the_same_crops_on_both_paths(
    smoke_config, inputs_kind, speed_factors, normalisation
):
    smoke_config.data.inputs = inputs_kind
    smoke_config.data.speed_factors = speed_factors
    smoke_config.data.normalisation = normalisation
    host, device = _data(smoke_config, False), _data(smoke_config, True)
    crop = 160  # Longer than some utterances: padding is compared too.
    smoke_config.data.crop_frames = crop
    kw = dict(crop=crop, batch_size=8, seed=4, fixed=inputs_kind == "fixed")
    host_it = iter(pipeline.train_dataset(host.splits["train"], host, **kw))
    device_it = iter(pipeline.train_dataset(device.splits["train"], device, **kw))
    padded = 0
    for _ in range(4):  # Two epochs of the 16 training utterances.
        want, got = next(host_it), next(device_it)
        assert "db" not in got and got["audio"].shape == (8, 159 * 160 + 512)
        np.testing.assert_array_equal(got["utt"], want["utt"])
        chex.assert_trees_all_equal(got["labels"], want["labels"])
        smoke_config.data.features_on_device = True
        x = _inputs(got, device, smoke_config)
        smoke_config.data.features_on_device = False
        if normalisation == "speaker":  # Each example's own statistics.
            np.testing.assert_array_equal(got["std"], want["std"])
            scale = types.SimpleNamespace(std=got["std"][:, None, :])
        else:
            scale = device
        assert _db_difference(x, _inputs(want, host, smoke_config), scale) <= (
            DB_TOLERANCE
        )
        padded += int(np.sum(got["frames"] < crop))
    assert padded > 0


def test_waveform_noise_is_white_at_the_drawn_snr_and_spares_the_padding(
    smoke_config,
):
    data = _data(smoke_config, True)
    split = data.splits["train"]
    bands = augment.white_noise_bands(
        sample_rate=16_000, n_fft=512, n_mels=64, fmin=50.0, fmax=8_000.0
    )
    noise = augment.MelNoise(1.0, (10.0, 10.0), bands, 80.0)
    crop = 400  # Longer than every utterance: both ends are padding.
    batch = next(
        iter(pipeline.train_dataset(split, data, crop=crop, batch_size=8, seed=1))
    )
    clean = batch["audio"]
    noisy = np.asarray(noise.on_audio(clean, batch["real"], jax.random.key(3)))
    for k, (lo, hi) in enumerate(batch["real"]):
        i = batch["utt"][k]
        wave = split.waveforms[0].store.get(split.waveforms[0].rows[i])
        assert (lo, hi) == (256, 256 + len(wave))  # The crop starts at frame 0.
        np.testing.assert_array_equal(clean[k, lo:hi], wave)
        added = noisy[k] - clean[k]
        assert np.all(added[:lo] == 0) and np.all(added[hi:] == 0)
        power = np.mean(np.square(wave, dtype=np.float64))
        snr = 10 * np.log10(power / np.mean(np.square(added[lo:hi], dtype=np.float64)))
        assert abs(snr - 10.0) < 0.2
    added = (noisy - clean)[0, batch["real"][0, 0] : batch["real"][0, 1]]
    spectrum = np.abs(np.fft.rfft(added)) ** 2  # White: flat on average.
    halves = np.array_split(spectrum[1:], 2)
    assert 0.8 < halves[0].mean() / halves[1].mean() < 1.25
    never = dataclasses.replace(noise, prob=0.0)
    np.testing.assert_array_equal(
        np.asarray(never.on_audio(clean, batch["real"], jax.random.key(3))), clean
    )


def test_device_spec_augment_masks_bounded_stripes():
    x = np.ones((64, 50, 16, 1), np.float32)
    kw = dict(time_masks=2, time_width=10, freq_masks=1, freq_width=4)
    out = np.asarray(features.spec_augment_jnp(x, jax.random.key(0), **kw))
    masked = out[..., 0] == 0  # [B, T, F]
    rows = np.all(masked, axis=2)  # Frames masked across every band.
    cols = np.all(masked, axis=1)
    # Every zero is in a masked frame or a masked band: stripes, nothing else.
    np.testing.assert_array_equal(masked, rows[:, :, None] | cols[:, None, :])
    assert rows.sum(1).max() <= 20 and cols.sum(1).max() <= 4
    assert rows.any(1).mean() > 0.8 and cols.any(1).mean() > 0.5
    assert len({r.tobytes() for r in rows}) > 32  # Each example its own masks.
    again = features.spec_augment_jnp(x, jax.random.key(0), **kw)
    np.testing.assert_array_equal(np.asarray(again), out)


def test_train_steps_on_device_features_match_cached_features(smoke_config):
    smoke_config.data.features_on_device = False
    _, _, host = train_steps(smoke_config, 3)
    smoke_config.data.features_on_device = True
    _, _, device = train_steps(smoke_config, 3)
    for want, got in zip(host, device, strict=True):
        for name in ("total", "emotion", "arousal"):
            key = f"train/loss/{name}"
            np.testing.assert_allclose(got[key], want[key], rtol=LOSS_RTOL)


def test_smoke_run_with_device_features_and_every_augmentation(
    smoke_config, tmp_path, monkeypatch
):
    traced = chex.assert_max_traces(step_lib.train_step, n=1)
    monkeypatch.setattr(step_lib, "train_step", traced)
    c = smoke_config
    c.data.features_on_device = True
    c.data.speed_factors, c.data.noise_prob = (1.25,), 0.5
    c.data.time_masks = c.data.freq_masks = 1
    results = loop.train_and_evaluate(c, str(tmp_path / "run"))  # 4 devices.
    assert results["step"] == c.train.num_steps
    assert all(math.isfinite(v) for v in results["scalars"].values())
    assert 0.0 <= results["scalars"]["test/ua/emotion"] <= 1.0


def test_store_indices_need_the_device_store(smoke_config):
    spec = build.input_spec(smoke_config)
    batch = {"first": np.zeros(2, np.int32), "frames": np.ones(2, np.int32)}
    with pytest.raises(ValueError, match="needs the device store"):
        inputs.model_inputs(batch, None, jax.random.key(0), spec)
