"""Tests for mtl_ser.data.audio and mtl_ser.data.features."""

import re

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soundfile as sf

from mtl_ser.data.audio import AudioError, load_audio, trim_silence
from mtl_ser.data.features import feature_config_key, log_mel, log_mel_jnp

SR = 16000
PROJECT_FEATURES = dict(
    sample_rate=SR, n_fft=512, hop_length=160, n_mels=64, fmin=50.0, fmax=8000.0,
    top_db=80.0,
)  # fmt: skip
LARGE_FEATURES = dict(PROJECT_FEATURES, n_fft=1024, hop_length=256, n_mels=128)


def _tone(freq, seconds, sr=SR, amplitude=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _speech_like(f0, seconds, amplitude, seed):
    """A harmonic tone with decaying partials plus noise: voiced-speech-ish."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20))
    noise = np.random.default_rng(seed).normal(size=t.size)
    wave = wave / np.abs(wave).max() + 0.05 * noise
    return (amplitude * wave).astype(np.float32)


# ---------------------------------------------------------------- load_audio


def test_round_trip_float_wav_is_exact(tmp_path):
    wave = _tone(440, 0.5)
    path = tmp_path / "tone.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    loaded = load_audio(path, SR)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, wave)


def test_round_trip_pcm16_within_quantisation(tmp_path):
    wave = _tone(440, 0.5)
    path = tmp_path / "tone16.wav"
    sf.write(path, wave, SR, subtype="PCM_16")
    loaded = load_audio(str(path), SR)
    assert np.max(np.abs(loaded - wave)) <= 1.0 / 32768


def test_stereo_is_averaged(tmp_path):
    left, right = _tone(440, 0.25), _tone(660, 0.25, amplitude=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, SR), (left + right) / 2, atol=1e-7)


def test_44k_stereo_is_downmixed_and_resampled(tmp_path):
    sr_in = 44100
    left = _tone(440, 1.5, sr=sr_in)
    stereo = np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / "cd.wav"
    sf.write(path, stereo, sr_in, subtype="PCM_16")
    loaded = load_audio(path, SR)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert loaded.size == int(1.5 * SR)
    # Downmix gives a 0.75 * 0.5 amplitude tone; resampling keeps its RMS and pitch.
    middle = loaded[SR // 4 : -SR // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.375 / np.sqrt(2), rel=1e-3)
    spectrum = np.abs(np.fft.rfft(middle))
    peak_hz = np.argmax(spectrum) * SR / middle.size
    assert peak_hz == pytest.approx(440, abs=2)


def _write_missing(path):
    pass


def _write_empty(path):
    path.write_bytes(b"")


def _write_text(path):
    path.write_text("not audio at all\n" * 20)


def _write_truncated(path):
    # The header still declares 16000 frames; only about half are present.
    # libsndfile does not complain: it silently reports fewer frames.
    sf.write(path, _tone(440, 1.0), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_zero_length(path):
    sf.write(path, np.zeros(0, np.float32), SR)


def _write_all_zero(path):
    sf.write(path, np.zeros(SR, np.float32), SR)


def _write_nan(path):
    wave = _tone(440, 0.1)
    wave[100] = np.nan
    sf.write(path, wave, SR, subtype="FLOAT")


def _write_inf(path):
    wave = _tone(440, 0.1)
    wave[5] = -np.inf
    sf.write(path, wave, SR, subtype="DOUBLE")


@pytest.mark.parametrize(
    "writer, problem",
    [
        (_write_missing, "not found"),
        (_write_empty, "empty"),
        (_write_text, "not an audio file"),
        (_write_truncated, "truncated"),
        (_write_zero_length, "zero-length"),
        (_write_all_zero, "zero"),
        (_write_nan, "non-finite"),
        (_write_inf, "non-finite"),
    ],
)
def test_bad_files_raise_audio_error_naming_file(tmp_path, writer, problem):
    name = f"bad_{writer.__name__}.wav"
    path = tmp_path / name
    writer(path)
    with pytest.raises(AudioError, match=re.escape(name)) as info:
        load_audio(path, SR)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncation_check_accepts_complete_wav_with_extra_chunk(tmp_path):
    # A trailing LIST chunk after the data must not confuse the header walk.
    path = tmp_path / "tagged.wav"
    wave = _tone(300, 0.2)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        f.title = "a title"
        f.write(wave)
    assert load_audio(path, SR).size == wave.size


# ---------------------------------------------------------------- trim_silence


def test_trim_removes_leading_and_trailing_silence():
    tone = _tone(440, 0.5)
    wave = np.concatenate([np.zeros(SR // 2), tone, np.zeros(SR)]).astype(np.float32)
    trimmed = trim_silence(wave, top_db=40, frame_length=512, hop_length=128)
    # Trimming works on whole frames, so allow a frame of slack on each side.
    assert abs(trimmed.size - tone.size) <= 2 * 512
    assert np.sqrt(np.mean(trimmed**2)) > 0.9 * np.sqrt(np.mean(tone**2))


def test_trim_never_returns_empty():
    silence = np.zeros(SR, np.float32)
    trimmed = trim_silence(silence, top_db=40, frame_length=512, hop_length=128)
    assert trimmed.size == SR
    assert trim_silence(np.zeros(0, np.float32), 40, 512, 128).size == 0


# ---------------------------------------------------------------- features


@pytest.mark.parametrize("params", [PROJECT_FEATURES, LARGE_FEATURES])
def test_log_mel_equals_librosa(params):
    wave = _speech_like(150, 1.0, 0.3, seed=0)
    p = params
    power = librosa.feature.melspectrogram(
        y=wave, sr=p["sample_rate"], n_fft=p["n_fft"], hop_length=p["hop_length"],
        n_mels=p["n_mels"], fmin=p["fmin"], fmax=p["fmax"], power=2.0,
        center=True, pad_mode="constant",
    )  # fmt: skip
    expected = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=p["top_db"]).T
    got = log_mel(wave, **p)
    assert got.dtype == np.float32
    assert got.shape == (1 + wave.size // p["hop_length"], p["n_mels"])
    np.testing.assert_array_equal(got, expected)


def test_log_mel_fmax_none_is_nyquist():
    wave = _speech_like(200, 0.3, 0.3, seed=1)
    explicit = log_mel(wave, **PROJECT_FEATURES)
    implicit = log_mel(wave, **dict(PROJECT_FEATURES, fmax=None))
    np.testing.assert_array_equal(explicit, implicit)


@pytest.mark.parametrize("params", [PROJECT_FEATURES, LARGE_FEATURES])
def test_log_mel_jnp_matches_librosa(params):
    # Amplitudes 100x apart: per-utterance top_db clipping must not couple clips.
    waves = np.stack(
        [
            _speech_like(110, 1.0, 0.5, seed=2),
            _speech_like(220, 1.0, 0.05, seed=3),
            _speech_like(330, 1.0, 0.005, seed=4),
        ]
    )
    jitted = jax.jit(lambda w: log_mel_jnp(w, **params))
    got = np.asarray(jitted(jnp.asarray(waves)))
    num_frames = 1 + waves.shape[1] // params["hop_length"]
    assert got.shape == (3, num_frames, params["n_mels"])
    assert got.dtype == np.float32
    for clip, wave in zip(got, waves, strict=True):
        reference = log_mel(wave, **params)
        assert np.max(np.abs(clip - reference)) < 1e-2


def test_log_mel_jnp_odd_length_and_no_top_db():
    params = dict(PROJECT_FEATURES, top_db=None)
    wave = _speech_like(180, 0.3, 0.2, seed=5)[:4321]
    got = np.asarray(log_mel_jnp(wave[None], **params))[0]
    reference = log_mel(wave, **params)
    assert got.shape == reference.shape == (1 + 4321 // 160, 64)
    assert np.max(np.abs(got - reference)) < 1e-2


def test_feature_config_key_is_stable_and_sensitive():
    cfg = dict(PROJECT_FEATURES, trim_top_db=30.0, name="logmel")
    key = feature_config_key(cfg)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert feature_config_key(dict(reversed(list(cfg.items())))) == key
    assert feature_config_key(dict(cfg)) == key
    changed = {
        "sample_rate": 8000, "n_fft": 1024, "hop_length": 256, "n_mels": 80,
        "fmin": 0.0, "fmax": None, "top_db": 60.0, "trim_top_db": 20.0,
        "name": "mfcc",
    }  # fmt: skip
    assert changed.keys() == cfg.keys()
    keys = {feature_config_key(dict(cfg, **{k: v})) for k, v in changed.items()}
    assert len(keys) == len(changed) and key not in keys
    assert feature_config_key(dict(cfg, extra=1)) != key
