"""log_mel_jnp within 0.01 dB of librosa where float32 is tightest (issue 5).

tests/test_audio_features.py compares 1 s speech-like clips. Here: 3 s clips
(what benchmarks/features.py times) at both settings it times, with signals
whose dynamic range within a frame is widest: a full-scale pure tone and a
chirp, whose Hann sidelobes fall more than 100 dB below their peak. There the
float32 rFFT's round-off (about 1e-7 of the frame's amplitude, so about -140
dB of its power) is no longer small against the true value: without top_db
the two implementations differ by 0.05-0.4 dB on these bins (librosa takes its
FFT in float64). The per-clip top_db=80 clipping keeps every value at most 80
dB below its clip's peak, where the round-off is below 1e-3 dB; the 0.01 dB
promise rests on that clipping being per clip, so a quiet clip and digital
silence share the batch.
"""

import jax
import numpy as np
import pytest

import tests
from mtl_ser.data.features import log_mel, log_mel_jnp

SR = 16_000
SECONDS = 3


def _clips() -> np.ndarray:
    t = np.arange(SECONDS * SR) / SR
    noise = np.random.default_rng(0).normal(size=t.size)
    clips = [
        0.99 * np.sin(2 * np.pi * 440 * t),  # Full-scale tone.
        0.5 * np.sin(2 * np.pi * (100 + 1000 * t) * t),  # Chirp, 0.1-6.1 kHz.
        1e-3 * (np.sin(2 * np.pi * 150 * t) + 0.1 * noise),  # 60 dB quieter.
        np.zeros_like(t),  # Digital silence: -100 dB everywhere.
    ]
    return np.stack(clips).astype(np.float32)


@pytest.mark.parametrize(
    "n_fft, hop_length, n_mels", [(512, 160, 64), (1024, 160, 128)]
)
def test_log_mel_jnp_is_within_a_hundredth_of_a_db(n_fft, hop_length, n_mels):
    params = dict(
        sample_rate=SR,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        fmin=50.0,
        fmax=8000.0,
        top_db=80.0,
    )
    waves = _clips()
    got = np.asarray(jax.jit(lambda w: log_mel_jnp(w, **params))(waves))
    for i, wave in enumerate(waves):
        reference = log_mel(wave, **params)
        assert got[i].shape == reference.shape == (1 + wave.size // hop_length, n_mels)
        difference = np.max(np.abs(got[i] - reference))
        assert difference <= 0.01, f"clip {i}: {difference:.2e} dB"
    # The range the comparison covers: tone and chirp reach the 80 dB floor.
    np.testing.assert_allclose(np.ptp(got[:2], axis=(1, 2)), 80.0, atol=1e-3)
    np.testing.assert_array_equal(got[3], -100.0)


_PIECES_SCRIPT = """
import sys
import jax
import numpy as np
from mtl_ser.data.features import log_mel_jnp
params = dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64,
              fmin=50.0, fmax=8000.0, top_db=80.0)
waves = np.load(sys.argv[1])
jitted = jax.jit(lambda w: log_mel_jnp(w, **params))
ffts = jitted.lower(waves).compile().as_text().count(" fft(")
np.save(sys.argv[2], np.asarray(jitted(waves)))
print(jax.device_count(), ffts)
"""


def test_pieces_of_a_large_batch_match_clip_by_clip(tmp_path):
    """On one CPU device a batch goes through the FFT in pieces of whole clips
    (3 of these 3 s clips per piece): 7 clips make pieces of 3, 3 and 1, and
    each clip's log-mel must be the one it gets alone, in its own row. With
    several devices (these tests have 4) the batch stays whole, as the pieces
    would cut across the devices' shards of it."""
    import os
    import subprocess
    import sys

    from mtl_ser.data import features

    params = dict(
        sample_rate=SR,
        n_fft=512,
        hop_length=160,
        n_mels=64,
        fmin=50.0,
        fmax=8000.0,
        top_db=80.0,
    )
    clips = _clips()
    rng = np.random.default_rng(1)
    waves = np.concatenate([clips, rng.normal(0, 0.1, (3, clips.shape[1]))])
    waves = waves.astype(np.float32)
    frames = 1 + waves.shape[1] // params["hop_length"]
    assert features.CPU_FRAMES_PER_PIECE // frames == 3  # The split tested.
    jitted = jax.jit(lambda w: log_mel_jnp(w, **params))
    assert jax.device_count() > 1
    assert jitted.lower(waves).compile().as_text().count(" fft(") == 1
    whole = np.asarray(jitted(waves))
    np.save(tmp_path / "waves.npy", waves)
    root = tests.ROOT
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _PIECES_SCRIPT,
            str(tmp_path / "waves.npy"),
            str(tmp_path / "pieces.npy"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["1", "3"]  # One device: one FFT per piece.
    pieces = np.load(tmp_path / "pieces.npy")
    for i, wave in enumerate(waves):
        alone = np.asarray(log_mel_jnp(wave[None], **params))[0]
        np.testing.assert_allclose(whole[i], alone, atol=1e-4, err_msg=f"clip {i}")
        np.testing.assert_allclose(pieces[i], alone, atol=1e-4, err_msg=f"clip {i}")
