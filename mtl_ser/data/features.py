"""Log-mel features: a librosa reference (host) and a pure-jnp twin (accelerator).

`log_mel` is the definition; `log_mel_jnp` reproduces it inside `jit` so that
features can be computed on device from raw waveforms. Both use ref=1.0 in the
dB conversion rather than the per-utterance maximum: absolute loudness is kept
because it carries emotion (anger is loud, sadness quiet).

Training crops on device (data.features_on_device): a crop of T frames of an
utterance's log-mel is computed from the `crop_samples` of its waveform, which
already hold librosa's centring zeros, by `crop_features_jnp` (framing without
centring, top_db relative to the whole utterance's peak, padding frames past
its end as the host pipeline does, normalisation). `spec_augment_jnp` masks
every training batch in the train step (augment.SpecAugment; data/inputs.py).
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

# On CPU the frames of a whole batch outgrow the caches between the framing,
# the FFT and the mel filters, so the batch goes through them about this many
# frames at a time (whole clips, at least one). 64 clips of 3 s (301 frames
# each, so pieces of 3 clips): 1.2x faster with n_fft 512, 1.3x with 1024,
# same values. Other backends, and several devices (whose shards of the batch
# the pieces would cut across), take the whole batch at once.
CPU_FRAMES_PER_PIECE = 1200
_MAX_PIECES = 32  # Larger batches take larger pieces.

# The `features` config fields that are log_mel's keyword arguments.
LOG_MEL_KEYS = (
    "sample_rate",
    "n_fft",
    "hop_length",
    "n_mels",
    "fmin",
    "fmax",
    "top_db",
)


def log_mel_settings(cfg: Mapping[str, Any]) -> dict:
    """log_mel's (and the jnp twins') keyword arguments from the `features` config."""
    return {key: cfg[key] for key in LOG_MEL_KEYS}


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


@functools.partial(jax.jit, static_argnames=LOG_MEL_KEYS)
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
    mel = _framed_mel_power(
        waves, sample_rate, n_fft, hop_length, n_mels, fmin, fmax, center=True
    )
    return _power_to_db(mel, top_db)


def num_frames(num_samples: int, n_fft: int, hop_length: int) -> int:
    """Frames `log_mel` gives a waveform of `num_samples` (librosa, center=True)."""
    return 1 + (num_samples + 2 * (n_fft // 2) - n_fft) // hop_length


def crop_num_samples(crop: int, n_fft: int, hop_length: int) -> int:
    """Samples that `crop` consecutive frames cover: (crop - 1) * hop + n_fft."""
    return (crop - 1) * hop_length + n_fft


def crop_samples(
    wave: np.ndarray, start: int, crop: int, n_fft: int, hop_length: int
) -> np.ndarray:
    """The samples under frames [start, start + crop) of `log_mel(wave)`: [S].

    With librosa's centring, frame j covers samples [j * hop, j * hop + n_fft)
    of `padded` = n_fft // 2 zeros + wave + n_fft // 2 zeros, so the crop is
    padded[start * hop : (start + crop - 1) * hop + n_fft], zero-extended past
    the end (frames beyond the utterance's last one: see crop_features_jnp).
    Only the crop's own samples are read (`wave` may be memory-mapped).

    Args:
        wave: [N] waveform (the trimmed one `log_mel` was given).
        start: first frame of the crop (>= 0).
        crop: frames in the crop.
        n_fft, hop_length: as `log_mel`.

    Returns:
        float32 array [S] with S = crop_num_samples(crop, n_fft, hop_length).
    """
    size = crop_num_samples(crop, n_fft, hop_length)
    first = start * hop_length - n_fft // 2  # Index in `wave` of the crop's start.
    lo, hi = max(first, 0), min(first + size, len(wave))
    out = np.zeros(size, np.float32)
    if hi > lo:
        out[lo - first : hi - first] = wave[lo:hi]
    return out


@functools.partial(jax.jit, static_argnames=LOG_MEL_KEYS)
def crop_features_jnp(
    audio: jax.Array,
    peak_db: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    frames: Optional[jax.Array] = None,
    floor_db: Optional[jax.Array] = None,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: Optional[float],
    top_db: Optional[float],
) -> jax.Array:
    """Normalised log-mels of training crops, as the host pipeline makes them.

    The twin of cutting frames [start, start + T) out of an utterance's cached
    `log_mel` and normalising them (data/batches.py, data/inputs.py): the crops' samples
    (`crop_samples`) are framed without centring (they hold it), top_db clips
    relative to the utterance's peak rather than the crop's, and the frames
    past the utterance's end take its minimum, as the host pads them.

    Args:
        audio: float32 [B, S] crop samples (`crop_samples`); T = 1 + (S - n_fft)
            // hop_length frames.
        peak_db: [B] each utterance's maximum log-mel (dB). The clipping
            reference is the larger of it and the crop's own maximum, so that
            a crop made louder (noise) is not clipped against a quieter peak.
        mean, std: [n_mels] the training split's band statistics, or [B, 1,
            n_mels] each example's own.
        frames: [B] int, the crop's frames inside the utterance (the rest are
            padding), or None when every frame is.
        floor_db: [B] each utterance's minimum log-mel (dB), the padding's
            value; needed with `frames`.
        sample_rate, n_fft, hop_length, n_mels, fmin, fmax, top_db: as `log_mel`.

    Returns:
        float32 array [B, T, n_mels, 1] of (log-mel - mean) / std.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be [B, S], got shape {audio.shape}")
    mel = _framed_mel_power(
        audio, sample_rate, n_fft, hop_length, n_mels, fmin, fmax, center=False
    )  # [B, T, F]
    db = _power_to_db(mel, top_db, peak_db=peak_db)
    if frames is not None:
        inside = jnp.arange(db.shape[1])[None, :] < frames[:, None]  # [B, T]
        db = jnp.where(inside[..., None], db, floor_db[:, None, None])
    x = (db - mean) / std
    return x[..., None].astype(jnp.float32)  # [B, T, F, 1]


def spec_augment_jnp(
    x: jax.Array,
    rng: jax.Array,
    *,
    time_masks: int,
    time_width: int,
    freq_masks: int,
    freq_width: int,
) -> jax.Array:
    """augment.SpecAugment's masks of a batch x [B, T, F, ...]: set to 0.

    Each example gets `time_masks` stripes of w consecutive frames, w uniform
    in [0, min(time_width, T)] and its start uniform among the w-wide windows
    that fit, and likewise `freq_masks` stripes of mel bands, drawn from `rng`.
    """
    keys = jax.random.split(rng, 2)
    masked = jnp.zeros(x.shape[:3], bool)  # [B, T, F]
    for axis, count, width, key in (
        (1, time_masks, time_width, keys[0]),
        (2, freq_masks, freq_width, keys[1]),
    ):
        if count == 0:
            continue
        size = x.shape[axis]
        w_key, start_key = jax.random.split(key)
        shape = (x.shape[0], count)
        w = jax.random.randint(w_key, shape, 0, min(width, size) + 1)
        start = jax.random.randint(start_key, shape, 0, size - w + 1)
        index = jnp.arange(size)[None, None, :]
        stripe = (index >= start[..., None]) & (index < (start + w)[..., None])
        stripe = jnp.any(stripe, axis=1)  # [B, size]
        masked = masked | jnp.expand_dims(stripe, 3 - axis)
    masked = masked.reshape(masked.shape + (1,) * (x.ndim - 3))
    return jnp.where(masked, jnp.zeros((), x.dtype), x)


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


def _frame(waves: jax.Array, n_fft: int, hop_length: int, *, center: bool) -> jax.Array:
    """Cuts [B, T, n_fft] frames, hop_length apart, from [B, N] waveforms.

    With `center`, first zero-pads n_fft // 2 on each side: librosa's
    center=True, pad_mode="constant" framing. One slice per frame, from a host
    constant of T starts: a gather of whole frames, which XLA CPU ran about 8%
    faster (the whole log-mel) than indexing with a [T, n_fft] index array.
    """
    if center:
        pad = n_fft // 2
        waves = jnp.pad(waves, ((0, 0), (pad, pad)))
    num_frames = 1 + (waves.shape[1] - n_fft) // hop_length
    starts = jnp.asarray(hop_length * np.arange(num_frames), jnp.int32)

    def frame(start):
        return jax.lax.dynamic_slice_in_dim(waves, start, n_fft, axis=1)

    return jax.vmap(frame, out_axes=1)(starts)  # [B, T, n_fft]


def _framed_mel_power(
    waves: jax.Array,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: Optional[float],
    *,
    center: bool,
) -> jax.Array:
    """Mel power [B, T, n_mels] of waveforms [B, N]: `_frame`, then `_mel_power`.

    On one CPU device, in pieces of whole clips of about CPU_FRAMES_PER_PIECE
    frames.
    """
    waves = waves.astype(jnp.float32)

    def mel_power(part):
        frames = _frame(part, n_fft, hop_length, center=center)
        return _mel_power(frames, sample_rate, n_fft, n_mels, fmin, fmax)

    size = waves.shape[0]
    padded = waves.shape[1] + (2 * (n_fft // 2) if center else 0)
    clips = max(1, CPU_FRAMES_PER_PIECE // max(1 + (padded - n_fft) // hop_length, 1))
    clips = max(clips, -(-size // _MAX_PIECES))  # Bounded unrolling.
    one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    if not one_cpu or size <= clips:
        return mel_power(waves)
    parts = [mel_power(waves[i : i + clips]) for i in range(0, size, clips)]
    return jnp.concatenate(parts, axis=0)


def _mel_power(
    frames: jax.Array,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: Optional[float],
) -> jax.Array:
    """Mel power [B, T, n_mels] of frames [B, T, n_fft] (Hann window, rFFT)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    mel_basis = _mel_basis(sample_rate, n_fft, n_mels, fmin, fmax)
    window = librosa.filters.get_window("hann", n_fft, fftbins=True)
    spectrum = jnp.fft.rfft(frames * window.astype(np.float32), axis=-1)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    # HIGHEST: accelerators otherwise multiply float32 in reduced precision
    # (TF32/bf16), which alone costs more than the 1e-2 dB we promise.
    return jnp.matmul(power, mel_basis.T, precision=jax.lax.Precision.HIGHEST)


def _power_to_db(
    power: jax.Array, top_db: Optional[float], peak_db: Optional[jax.Array] = None
) -> jax.Array:
    """librosa.power_to_db with ref=1.0 on [B, T, n_mels], clipping per utterance.

    Clipping is relative to each utterance's own maximum so that a batch's
    loudest clip does not flatten the quiet ones; for crops, to the larger of
    `peak_db` [B] (the whole utterance's maximum) and the crop's own.
    """
    db = 10.0 * jnp.log10(jnp.maximum(power, _AMIN))
    if top_db is None:
        return db
    if top_db < 0:
        raise ValueError(f"top_db must be non-negative, got {top_db}")
    peak = jnp.max(db, axis=(1, 2), keepdims=True)
    if peak_db is not None:
        peak = jnp.maximum(peak, jnp.reshape(peak_db, (-1, 1, 1)))
    return jnp.maximum(db, peak - top_db)


def _json_default(value: Any) -> Any:
    """Converts numpy values that json cannot serialise into Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
