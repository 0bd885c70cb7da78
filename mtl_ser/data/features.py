"""Log-mel features: a librosa reference (host) and a pure-jnp twin (accelerator).

`log_mel` is the definition; `log_mel_jnp` reproduces it inside `jit` so that
features can be computed on device from raw waveforms. Both use ref=1.0 in the
dB conversion rather than the per-utterance maximum: absolute loudness is kept
because it carries emotion (anger is loud, sadness quiet).
"""

import functools
import hashlib
import json
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import librosa
import numpy as np

# Floor on power before the log, as librosa's power_to_db(amin=...): -100 dB.
_AMIN = 1e-10


def log_mel(
    wave: np.ndarray,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: Optional[float],
    top_db: Optional[float],
) -> np.ndarray:
    """Computes the log-mel spectrogram of one waveform with librosa.

    Args:
        wave: 1-D waveform.
        sample_rate: sample rate of `wave` in Hz.
        n_fft: FFT size (and window length) in samples.
        hop_length: hop between frames in samples.
        n_mels: number of mel bands.
        fmin: lowest mel band edge in Hz.
        fmax: highest mel band edge in Hz; None means sample_rate / 2.
        top_db: dynamic range kept below the utterance's loudest bin, in dB;
            None keeps everything down to the -100 dB floor.

    Returns:
        float32 array [T, n_mels] with T = 1 + len(wave) // hop_length.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    power = librosa.feature.melspectrogram(
        y=np.asarray(wave, dtype=np.float32),
        sr=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        power=2.0,
        center=True,
        pad_mode="constant",
    )
    # ref=1.0, not np.max: keeps absolute loudness, which carries emotion.
    db = librosa.power_to_db(power, ref=1.0, amin=_AMIN, top_db=top_db)
    return np.ascontiguousarray(db.T, dtype=np.float32)


@functools.partial(
    jax.jit,
    static_argnames=(
        "sample_rate",
        "n_fft",
        "hop_length",
        "n_mels",
        "fmin",
        "fmax",
        "top_db",
    ),
)
def log_mel_jnp(
    waves: jax.Array,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: Optional[float],
    top_db: Optional[float],
) -> jax.Array:
    """Computes log-mel spectrograms of a batch of waveforms in pure jnp.

    Matches `log_mel` (same arguments, same meaning) to within float32 rounding;
    jitted with all keyword arguments static, and usable inside other jitted code.

    Args:
        waves: float32 array [B, N] of equal-length waveforms.
        sample_rate, n_fft, hop_length, n_mels, fmin, fmax, top_db: as `log_mel`.

    Returns:
        float32 array [B, T, n_mels] with T = 1 + N // hop_length.
    """
    if waves.ndim != 2:
        raise ValueError(f"waves must be [B, N], got shape {waves.shape}")
    fmax = sample_rate / 2 if fmax is None else fmax
    mel_basis = _mel_basis(sample_rate, n_fft, n_mels, fmin, fmax)
    window = librosa.filters.get_window("hann", n_fft, fftbins=True)
    frames = _frame(waves.astype(jnp.float32), n_fft, hop_length)
    spectrum = jnp.fft.rfft(frames * window.astype(np.float32), axis=-1)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    # HIGHEST: accelerators otherwise multiply float32 in reduced precision
    # (TF32/bf16), which alone costs more than the 1e-2 dB we promise.
    mel = jnp.matmul(power, mel_basis.T, precision=jax.lax.Precision.HIGHEST)
    return _power_to_db(mel, top_db)


def feature_config_key(cfg: Mapping[str, Any]) -> str:
    """Returns a short stable hash of a feature configuration.

    The key names a feature cache directory, so it depends only on the
    configuration's content: key order is irrelevant, any changed value changes
    the key. Note that 1 and 1.0 serialise (and hash) differently.

    Args:
        cfg: JSON-serialisable mapping (numpy scalars and arrays are accepted).

    Returns:
        The first 16 hex digits of the sha256 of the canonical JSON form.
    """
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def _mel_basis(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Returns librosa's mel filterbank [n_mels, 1 + n_fft // 2] as float32.

    Computed once on the host (librosa defaults: slaney norm, htk=False) and
    embedded as a constant; read-only because the cached array is shared.
    """
    basis = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax
    ).astype(np.float32)
    basis.setflags(write=False)
    return basis


def _frame(waves: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """Zero-pads n_fft // 2 on each side and cuts [B, T, n_fft] frames.

    This is librosa's center=True, pad_mode="constant" framing. The gather
    indices are a host constant since all shapes are static under jit.
    """
    pad = n_fft // 2
    padded = jnp.pad(waves, ((0, 0), (pad, pad)))
    num_frames = 1 + (padded.shape[1] - n_fft) // hop_length
    starts = hop_length * np.arange(num_frames)
    index = starts[:, None] + np.arange(n_fft)[None, :]
    return padded[:, index]


def _power_to_db(power: jax.Array, top_db: Optional[float]) -> jax.Array:
    """librosa.power_to_db with ref=1.0 on [B, T, n_mels], clipping per utterance.

    Clipping is relative to each utterance's own maximum so that a batch's
    loudest clip does not flatten the quiet ones.
    """
    db = 10.0 * jnp.log10(jnp.maximum(power, _AMIN))
    if top_db is None:
        return db
    if top_db < 0:
        raise ValueError(f"top_db must be non-negative, got {top_db}")
    peak = jnp.max(db, axis=(1, 2), keepdims=True)
    return jnp.maximum(db, peak - top_db)


def _json_default(value: Any) -> Any:
    """Converts numpy values that json cannot serialise into Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
