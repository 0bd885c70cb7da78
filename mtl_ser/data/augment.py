"""Augmentation for small corpora: speed perturbation and additive noise.

Speed perturbation (Ko et al. 2015, as sox `speed`) makes offline copies of the
corpus: each waveform is resampled so that it plays `factor` times faster at
the same sample rate (N / factor samples; pitch and formants move with it), then
trimmed and log-mel'd as the original (see cache.build_cache).

Noise is added on the fly to training crops, in the train step (batch
operations, from the step's key). The cache holds log-mels, not waveforms, so
white noise is added in the mel power domain: for a waveform
x + z (z white, variance s2), each mel bin's power is

    sum_k M[b, k] |X_k + Z_k|^2 = S + N + 2 Re sum_k M[b, k] X_k conj(Z_k),

and the cross term has mean zero (z is independent of x, with zero mean); it
is left out. N is drawn from a Gamma distribution per bin whose mean and
variance are those of real white noise after the Hann window, the STFT and
the mel filters (`white_noise_bands`), so that log-mels of noisy crops have
the level and the spread of the real thing. What is left out: the cross term,
the correlation of N across overlapping frames and neighbouring bands (which
leaves each bin's distribution unchanged), and the half-empty first and last
frames of an utterance (librosa's zero-padded centring). Measured against noise
added to the waveform (tests/data/test_augment.py), the mean log-mel per band agrees
within 0.5 dB (0.16 dB averaged over the bands) at 5 and 20 dB SNR. Crops made
from waveforms (data.features_on_device) get real white noise on their samples.
"""

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from mtl_ser.data import audio

# Floor on power before the log, as features.log_mel (librosa's amin): -100 dB.
_AMIN = 1e-10


def speed_perturb(
    wave: np.ndarray, factor: float, sample_rate: int, *, name: str
) -> np.ndarray:
    """The waveform played `factor` times faster at the same sample rate.

    The samples are taken as recorded at `factor * sample_rate` and resampled
    to `sample_rate` (with audio.conform's resampler), which shortens them to
    about N / factor samples and multiplies every frequency by `factor`.

    Args:
      wave: [N] float32 samples at `sample_rate`.
      factor: speed factor (> 1 is faster and higher).
      sample_rate: the rate of `wave` and of the result, in Hz.
      name: what the waveform is (its file), for error messages.

    Returns:
      [about N / factor] float32 samples at `sample_rate`.

    Raises:
      audio.AudioError: naming `name`, when the waveform cannot be resampled.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1:
        return wave
    native_rate = int(round(sample_rate * factor))
    return audio.conform(wave[:, None], native_rate, sample_rate, name)


@dataclasses.dataclass(frozen=True)
class WhiteNoiseBands:
    """How white noise looks after the STFT and the mel filters, per band.

    Attributes:
      power: [F] expected mel power of unit-variance white noise (proportional
        to the row sums of the mel basis: Slaney-normalised filters make these
        unequal, the narrow low bands being the strongest).
      shape: [F] Gamma shape parameter per band: mean^2 / variance of the
        band's power, i.e. half its equivalent degrees of freedom (1 for a
        single FFT bin, more for wide bands summing many bins).
      hz: [F] the Hz of spectrum each band stands for (half the width of its
        triangle): hz @ mel_power is proportional to the waveform's power in
        the mel range, whatever its spectrum.
    """

    power: np.ndarray
    shape: np.ndarray
    hz: np.ndarray


@functools.lru_cache(maxsize=8)
def white_noise_bands(
    *, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> WhiteNoiseBands:
    """The band statistics of white noise for features.log_mel's settings.

    For real white noise of variance 1, the Hann-windowed spectrum has
    E[X_k conj(X_l)] = V(k - l) and E[X_k X_l] = V(k + l), where V is the DFT
    of the squared window. A mel band P = sum_k M_k |X_k|^2 then has mean
    V(0) sum_k M_k and variance sum_kl M_k M_l (|V(k - l)|^2 + |V(k + l)|^2)
    (Isserlis). A Gamma with the same two moments is the classic
    (Satterthwaite) approximation of such a weighted sum of chi-squares; it is
    exact for a single bin (exponential).
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    basis = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax
    ).astype(np.float64)  # [F, K]
    window = librosa.filters.get_window("hann", n_fft, fftbins=True)
    v = np.fft.fft(np.square(window.astype(np.float64)))  # [n_fft]
    k = np.arange(basis.shape[1])
    cov = np.square(np.abs(v[(k[:, None] - k[None, :]) % n_fft])) + np.square(
        np.abs(v[(k[:, None] + k[None, :]) % n_fft])
    )  # [K, K]: Cov(|X_k|^2, |X_l|^2)
    mean = v[0].real * basis.sum(1)
    var = np.einsum("bk,kl,bl->b", basis, cov, basis)
    # Slaney filters: triangles of height 2 / (width in Hz) that sum to one
    # once multiplied by half their width, so `hz` undoes the normalisation.
    edges = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)
    bands = WhiteNoiseBands(
        power=mean, shape=np.square(mean) / var, hz=(edges[2:] - edges[:-2]) / 2
    )
    for array in (bands.power, bands.shape, bands.hz):
        array.setflags(write=False)  # Shared by the cache.
    return bands


def add_mel_noise(
    db: jax.Array,
    snr_db: jax.Array,
    bands: WhiteNoiseBands,
    key: jax.Array,
    *,
    top_db: Optional[float],
) -> jax.Array:
    """Adds white noise at `snr_db` to log-mel crops, in the mel power domain.

    Each crop's power is its mean over frames of the Hz-weighted band powers
    (`bands.hz`), which is proportional to the power of the waveform in the mel
    range; the noise's is set `snr_db` below it, spread over the bands as white
    noise spreads (`bands.power`), with a Gamma-distributed fluctuation per bin
    (`bands.shape`). An unweighted mean over the bands would weigh each low
    band (a few tens of Hz wide, where speech is loud) as much as a high one
    (hundreds of Hz) and put the noise 3-4 dB too high (measured on speech-like
    audio and on a 440 Hz tone).

    Args:
      db: [B, T, F] log-mel crops in dB (features.log_mel, before normalisation).
      snr_db: [B] signal-to-noise ratio of each result, in dB.
      bands: white_noise_bands for the features' settings.
      key: draws the B * T * F Gamma variates.
      top_db: as features.log_mel: each result is clipped this far below its
        maximum; None does not clip.

    Returns:
      [B, T, F] float32 log-mels of the crops plus noise, in dB.
    """
    power = jnp.power(10.0, db.astype(jnp.float32) / 10.0)  # [B, T, F]
    signal = jnp.mean(power @ bands.hz.astype(np.float32), axis=1)  # [B]
    level = signal / float(bands.power @ bands.hz) * 10.0 ** (-snr_db / 10.0)
    shape = jnp.broadcast_to(bands.shape.astype(np.float32), power.shape)
    fluctuation = jax.random.gamma(key, shape) / shape
    added = level[:, None, None] * bands.power.astype(np.float32) * fluctuation
    noisy = 10.0 * jnp.log10(jnp.maximum(power + added, _AMIN))
    if top_db is not None:
        peak = jnp.max(noisy, axis=(1, 2), keepdims=True)
        noisy = jnp.maximum(noisy, peak - top_db)
    return noisy


def add_white_noise(
    audio: jax.Array, real: jax.Array, snr_db: jax.Array, key: jax.Array
) -> jax.Array:
    """Crop samples plus real white noise at `snr_db` (data.features_on_device).

    The noise's power is set relative to the mean power of each crop's own
    samples, [lo, hi) = `real`; the centring and end padding stay zero, as
    noise added to the waveform before the STFT would leave them. The truth
    that add_mel_noise approximates in the mel domain, where the signal's power
    is that of the crop's mel range (50 Hz to fmax by default) rather than all.

    Args:
      audio: [B, S] crop samples.
      real: [B, 2] int, each crop's own samples [lo, hi).
      snr_db: [B] signal-to-noise ratio, in dB.
      key: draws the Gaussian samples.
    """
    pos = jnp.arange(audio.shape[1])[None, :]
    inside = (pos >= real[:, :1]) & (pos < real[:, 1:])  # [B, S]
    count = jnp.maximum(jnp.sum(inside, axis=1), 1)
    power = jnp.sum(jnp.where(inside, jnp.square(audio), 0.0), axis=1) / count
    scale = jnp.sqrt(power * 10.0 ** (-snr_db / 10.0))  # [B]
    noise = scale[:, None] * jax.random.normal(key, audio.shape, audio.dtype)
    return audio + jnp.where(inside, noise, 0.0)


@dataclasses.dataclass(frozen=True)
class MelNoise:
    """Random white noise for training crops (config data.noise_*).

    With probability `prob` a crop gets white noise at an SNR drawn uniformly
    from `snr_db` (lo, hi): in the mel domain for log-mel crops (`on_log_mels`,
    add_mel_noise), on the samples for audio crops (`on_audio`). Drawn in the
    train step, from its key.
    """

    prob: float
    snr_db: tuple
    bands: WhiteNoiseBands
    top_db: Optional[float]

    def draws(self, key: jax.Array, batch: int) -> tuple:
        """([B] bool which crops get noise, [B] their SNRs, the noise's key)."""
        which, snr, noise = jax.random.split(key, 3)
        lo, hi = self.snr_db
        chosen = jax.random.uniform(which, (batch,)) < self.prob
        return chosen, jax.random.uniform(snr, (batch,), minval=lo, maxval=hi), noise

    def on_log_mels(self, db: jax.Array, key: jax.Array) -> jax.Array:
        """Noisy copies of the crops db [B, T, F] (dB) chosen with `prob`."""
        chosen, snr, key = self.draws(key, db.shape[0])
        noisy = add_mel_noise(db, snr, self.bands, key, top_db=self.top_db)
        return jnp.where(chosen[:, None, None], noisy, db)

    def on_audio(self, audio: jax.Array, real: jax.Array, key: jax.Array):
        """Noisy copies of the crops' samples audio [B, S] chosen with `prob`."""
        chosen, snr, key = self.draws(key, audio.shape[0])
        noisy = add_white_noise(audio, real, snr, key)
        return jnp.where(chosen[:, None], noisy, audio)


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """Time and frequency masking (SpecAugment, Park et al. 2019) settings.

    Each of `time_masks` masks sets w consecutive frames to 0, with w uniform
    in [0, time_width]; each of `freq_masks` masks sets w consecutive mel bands
    to 0, w uniform in [0, freq_width]. Applied in the train step to normalised
    log-mels, where 0 is the training mean of the band
    (features.spec_augment_jnp).
    """

    time_masks: int = 0
    time_width: int = 0
    freq_masks: int = 0
    freq_width: int = 0


def make_spec_augment(data_cfg) -> Optional[SpecAugment]:
    """The SpecAugment of data.time_masks etc., or None when both counts are 0."""
    d = data_cfg
    if not (d.time_masks or d.freq_masks):
        return None
    return SpecAugment(
        d.time_masks, d.time_mask_frames, d.freq_masks, d.freq_mask_bands
    )


def make_noise(data_cfg, features_cfg) -> Optional[MelNoise]:
    """The MelNoise of the config, or None when data.noise_prob is 0."""
    if not data_cfg.noise_prob:
        return None
    f = features_cfg
    bands = white_noise_bands(
        sample_rate=f.sample_rate,
        n_fft=f.n_fft,
        n_mels=f.n_mels,
        fmin=f.fmin,
        fmax=f.fmax,
    )
    lo, hi = data_cfg.noise_snr_db
    return MelNoise(float(data_cfg.noise_prob), (float(lo), float(hi)), bands, f.top_db)
