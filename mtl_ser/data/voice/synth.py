"""One synthetic utterance: a small source-filter synthesiser.

A Rosenberg glottal pulse train (with jitter, shimmer, spectral tilt and
aspiration noise) follows an F0 contour and is shaped by four time-varying
formant resonators that move between vowel targets, syllable by syllable;
fricative and plosive noise bursts stand in for consonants. Every utterance
draws its randomness from its own generator seeded by (seed, speaker, index),
which makes the output bitwise reproducible and independent of the corpus size.
"""

import dataclasses

import numpy as np
from scipy import signal

from mtl_ser.data.voice import speakers

# Bump whenever the synthesis changes, so corpora cached on disk are regenerated.
GENERATOR_VERSION = 1

# F1-F4 vowel targets in Hz for a reference (scale 1.0) vocal tract; roughly
# Peterson & Barney's adult male averages for /a i u e o ae er/.
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],
        [270.0, 2290.0, 3010.0, 3700.0],
        [300.0, 870.0, 2240.0, 3300.0],
        [530.0, 1840.0, 2480.0, 3500.0],
        [570.0, 840.0, 2410.0, 3300.0],
        [660.0, 1720.0, 2410.0, 3400.0],
        [490.0, 1350.0, 1690.0, 3300.0],
    ]
)
_BANDWIDTHS = np.array([70.0, 100.0, 160.0, 220.0])
_FORMANT_BLOCK_S = 0.005  # formants are updated every 5 ms
_SYLLABLE_S = 0.2  # nominal syllable duration at speaking rate 1.0
_PULSE_PEAK = 0.4  # Rosenberg opening phase, as a fraction of the period
_REFERENCE_DBFS = -26.0  # RMS level of neutral vowels before gain offsets


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Segment timing of one utterance, in samples."""

    length: int  # total samples
    speech: tuple  # (start, end) of the spoken part
    nuclei: np.ndarray  # (syllables, 2) voiced vowel nucleus start/end
    accented: np.ndarray  # (syllables,) bool: nucleus carries a pitch accent
    consonants: tuple  # ((start, end, kind), ...) with kind "fricative"/"plosive"


def _layout(rng, rate, pause_prob, accent_prob, sample_rate):
    """Places syllables, pauses and consonant onsets within a 1.5-4 s utterance.

    The duration is drawn independently of the emotion, so speaking rate shows
    up as syllables per second rather than as a trivial length cue.
    """
    total = rng.uniform(1.5, 4.0)
    lead, trail = rng.uniform(0.08, 0.25), rng.uniform(0.1, 0.3)
    speech = total - lead - trail
    nominal = _SYLLABLE_S / rate
    count = max(2, int(round(speech / (nominal * (1.0 + 0.6 * pause_prob)))))
    widths = rng.uniform(0.7, 1.3, count)
    pauses = np.where(rng.random(count) < pause_prob, rng.uniform(0.4, 0.8, count), 0)
    pauses[-1] = 0.0
    scale = speech / (widths.sum() + pauses.sum())
    widths, pauses = widths * scale, pauses * scale
    starts = lead + np.concatenate([[0.0], np.cumsum(widths + pauses)[:-1]])

    nuclei, consonants = [], []
    kinds = rng.random(count)
    onset_fraction = rng.uniform(0.2, 0.35, count)
    for start, width, kind, fraction in zip(
        starts, widths, kinds, onset_fraction, strict=True
    ):
        onset = 0.0
        if kind < 0.7:  # 70% of syllables open with a consonant
            onset = width * fraction
            name = "fricative" if kind < 0.35 else "plosive"
            consonants.append((start, start + onset, name))
        nuclei.append((start + onset, start + width))

    to_samples = lambda t: np.round(np.asarray(t) * sample_rate).astype(int)
    return _Layout(
        length=int(round(total * sample_rate)),
        speech=(int(to_samples(lead)), int(to_samples(lead + speech))),
        nuclei=to_samples(nuclei),
        accented=rng.random(count) < accent_prob,
        consonants=tuple(
            (int(to_samples(a)), int(to_samples(b)), k) for a, b, k in consonants
        ),
    )


def _accent_shape(u, abrupt):
    """Pitch-accent shape over normalised nucleus time `u` in [0, 1].

    Smooth accents rise and fall symmetrically (happiness); abrupt ones jump up
    within the first 10% of the vowel and then sink (anger).
    """
    smooth = np.sin(np.pi * u) ** 2
    sharp = np.minimum(1.0, u / 0.1) * (1.0 - 0.6 * u)
    return (1.0 - abrupt) * smooth + abrupt * sharp


def _f0_contour(rng, layout, style, base_f0, sample_rate):
    """Returns the F0 contour in Hz for every sample of the utterance.

    Semitone offsets from `base_f0` add up: a linear declination over the
    speech, a pitch accent on accented nuclei, a fall within every nucleus and a
    slow random wander.
    """
    n = layout.length
    start, end = layout.speech
    progress = np.clip((np.arange(n) - start) / max(end - start, 1), 0.0, 1.0)
    semitones = style.declination * (0.5 - progress)
    phase, wander_hz = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.2)
    semitones += 0.4 * np.sin(
        2 * np.pi * wander_hz * np.arange(n) / sample_rate + phase
    )
    sizes = style.f0_range * rng.uniform(0.6, 1.0, len(layout.nuclei))
    for (a, b), accented, size in zip(
        layout.nuclei, layout.accented, sizes, strict=True
    ):
        u = np.linspace(0.0, 1.0, b - a, endpoint=False)
        semitones[a:b] -= style.fall * u
        if accented:
            semitones[a:b] += size * _accent_shape(u, style.abrupt)
    return np.clip(base_f0 * 2.0 ** (semitones / 12.0), 50.0, 600.0)


def _rosenberg(phase, closing):
    """Rosenberg glottal flow at within-cycle phase in [0, 1)."""
    opening = 0.5 * (1.0 - np.cos(np.pi * phase / _PULSE_PEAK))
    closing_part = np.cos(0.5 * np.pi * (phase - _PULSE_PEAK) / closing)
    flow = np.where(phase < _PULSE_PEAK, opening, closing_part)
    return np.where(phase < _PULSE_PEAK + closing, flow, 0.0)


def _glottal_source(rng, f0, style, tilt, breath, sample_rate):
    """Returns the excitation: tilted pulse-train derivative plus aspiration.

    Jitter perturbs each cycle's frequency and shimmer its amplitude; both are
    drawn per cycle by indexing with the cycle number, which keeps this vectorised.
    """
    cycles = int(np.sum(f0) / sample_rate) + 2
    jitter = 1.0 + style.jitter * rng.standard_normal(cycles + 1)
    rough = np.cumsum(f0) / sample_rate
    phase = np.cumsum(f0 * jitter[rough.astype(int)]) / sample_rate
    cycle = phase.astype(int)
    shimmer = 1.0 + style.shimmer * rng.standard_normal(cycle[-1] + 1)
    flow = _rosenberg(phase - cycle, style.closing) * shimmer[cycle]
    # Lip radiation differentiates the flow; the one-pole low-pass sets the tilt.
    voiced = signal.lfilter([1.0], [1.0, -tilt], np.diff(flow, prepend=0.0))
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
    open_phase = (phase - cycle) < _PULSE_PEAK + style.closing
    aspiration = np.diff(rng.standard_normal(len(f0)), prepend=0.0) * open_phase
    aspiration /= np.sqrt(np.mean(aspiration**2)) + 1e-12
    return voiced + max(breath, 0.0) * aspiration


def _envelope(rng, layout, attack, sample_rate):
    """Per-syllable amplitude envelope: raised-cosine attack, decay and release.

    Accented syllables are 3 dB louder; every syllable varies by about 1.5 dB.
    """
    envelope = np.zeros(layout.length)
    levels_db = 3.0 * layout.accented + rng.normal(0.0, 1.5, len(layout.nuclei))
    for (a, b), level_db in zip(layout.nuclei, levels_db, strict=True):
        t = np.arange(b - a) / sample_rate
        duration = max((b - a) / sample_rate, 1e-3)
        rise = 0.5 - 0.5 * np.cos(np.pi * np.minimum(1.0, t / attack))
        fall = np.clip((duration - t) / min(0.04, 0.4 * duration), 0.0, 1.0)
        sustain = 1.0 - 0.3 * t / duration
        envelope[a:b] = rise * sustain * fall * 10.0 ** (level_db / 20.0)
    return envelope


def _formant_tracks(rng, layout, scale, sample_rate):
    """Returns per-block formant frequencies (blocks, 4) moving between vowels.

    Each nucleus holds its vowel target over its middle half; the formants glide
    linearly between neighbouring targets through the consonants.
    """
    block = int(round(_FORMANT_BLOCK_S * sample_rate))
    blocks = -(-layout.length // block)
    vowels = rng.integers(0, len(_VOWELS), len(layout.nuclei))
    targets = _VOWELS[vowels] * scale * rng.uniform(0.95, 1.05, (len(vowels), 4))
    a, b = layout.nuclei[:, 0], layout.nuclei[:, 1]
    knots = np.stack([a + 0.25 * (b - a), b - 0.25 * (b - a)], axis=1).ravel()
    values = np.repeat(targets, 2, axis=0)
    centres = (np.arange(blocks) + 0.5) * block
    tracks = np.stack([np.interp(centres, knots, values[:, i]) for i in range(4)], 1)
    return np.minimum(tracks, 0.45 * sample_rate), block


def _all_pole_coefficients(freqs, bandwidths, sample_rate):
    """Denominators (blocks, 9) of the cascade of four DC-normalised resonators."""
    radius = np.broadcast_to(np.exp(-np.pi * bandwidths / sample_rate), freqs.shape)
    theta = 2.0 * np.pi * freqs / sample_rate
    poly = np.ones((len(freqs), 1))
    for i in range(freqs.shape[1]):
        r = radius[:, i]
        quad = np.stack([np.ones_like(r), -2 * r * np.cos(theta[:, i]), r**2], axis=1)
        product = np.zeros((len(freqs), poly.shape[1] + 2))
        for j in range(3):
            product[:, j : j + poly.shape[1]] += quad[:, j : j + 1] * poly
        poly = product
    return poly


def _filter_blocks(x, denominators, block):
    """Filters `x` block-wise with time-varying all-pole coefficients.

    The filter state handed to the next block is rebuilt from the last outputs,
    not copied, since a transposed direct-form state only means something for
    the coefficients that produced it. Each block's gain is its DC gain's inverse.
    """
    order = denominators.shape[1] - 1
    y = np.zeros_like(x)
    history = np.zeros(order)  # most recent output first
    for k, a in enumerate(denominators):
        lo, hi = k * block, min((k + 1) * block, len(x))
        zi = -np.correlate(a[1:], history, mode="full")[order - 1 :]
        y[lo:hi], _ = signal.lfilter([a.sum()], a, x[lo:hi], zi=zi)
        history = np.concatenate([y[lo:hi][::-1], history])[:order]
    return y


def _consonant_noise(rng, layout, scale, sample_rate):
    """Returns unit-scale noise bursts: fricative hiss or plosive closure + burst."""
    out = np.zeros(layout.length)
    for start, end, kind in layout.consonants:
        if kind == "fricative":
            centre = min(rng.uniform(2500.0, 5500.0) * scale, 0.42 * sample_rate)
            b, a = signal.iirpeak(centre, centre / 1500.0, fs=sample_rate)
            noise = signal.lfilter(b, a, rng.standard_normal(end - start))
            taper = np.sin(np.pi * np.linspace(0.0, 1.0, end - start)) ** 0.5
            out[start:end] = 0.6 * noise / (np.std(noise) + 1e-12) * taper
        else:
            burst = min(int(0.015 * sample_rate), end - start)
            decay = np.exp(-np.arange(burst) / (0.004 * sample_rate))
            noise = np.diff(rng.standard_normal(burst + 1))
            out[end - burst : end] = noise * decay
    return out


def synthesize(seed, speaker_index, utterance_index, sample_rate=16000):
    """Synthesises one utterance.

    Args:
      seed: corpus seed (non-negative int).
      speaker_index: speaker number; even is female, odd male.
      utterance_index: utterance number within the speaker; its emotion is
        speakers.EMOTIONS[utterance_index % 4].
      sample_rate: output sample rate in Hz.

    Returns:
      (audio, info): float64 mono audio in [-1, 1] and a dict with the emotion,
      intensity, arousal, valence and dominance of the utterance.
    """
    speaker = speakers.speaker_profile(seed, speaker_index)
    rng = np.random.default_rng(
        [seed, speakers.UTTERANCE_STREAM, speaker_index, utterance_index]
    )
    emotion = speakers.EMOTIONS[utterance_index % len(speakers.EMOTIONS)]
    intensity = rng.uniform(0.3, 1.0)
    style = speakers.blend(emotion, intensity)
    arousal, valence, dominance = speakers.avd_labels(rng, emotion, intensity)

    rate = speaker.rate * style.rate * np.exp(rng.normal(0.0, 0.08))
    layout = _layout(rng, rate, style.pause_prob, style.accent_prob, sample_rate)
    base_f0 = speaker.f0 * 2.0 ** ((style.f0_shift + rng.normal(0.0, 0.7)) / 12.0)
    f0 = _f0_contour(rng, layout, style, base_f0, sample_rate)
    tilt = float(np.clip(speaker.tilt + style.tilt, 0.0, 0.95))
    source = _glottal_source(
        rng, f0, style, tilt, speaker.breath + style.breath, sample_rate
    )
    source *= _envelope(rng, layout, style.attack, sample_rate)
    tracks, block = _formant_tracks(rng, layout, speaker.formant_scale, sample_rate)
    # Breathy voices have wider (more damped) formants, especially F1.
    widen = 1.0 + 4.0 * max(speaker.breath + style.breath, 0.0) * np.array([2, 1, 1, 1])
    poles = _all_pole_coefficients(tracks, _BANDWIDTHS * widen, sample_rate)
    speech = _filter_blocks(source, poles, block)
    audio = _mix(rng, speech, layout, speaker, style, sample_rate)
    info = dict(
        emotion=emotion,
        intensity=float(intensity),
        arousal=arousal,
        valence=valence,
        dominance=dominance,
    )
    return audio, info


def _mix(rng, speech, layout, speaker, style, sample_rate):
    """Sets the vowel level, adds consonants and background noise, avoids clipping."""
    voiced = np.concatenate([speech[a:b] for a, b in layout.nuclei])
    level_db = _REFERENCE_DBFS + speaker.gain_db + style.gain_db + rng.normal(0, 1.5)
    gain = 10.0 ** (level_db / 20.0) / (np.sqrt(np.mean(voiced**2)) + 1e-12)
    consonant_db = rng.uniform(-14.0, -8.0) + 0.3 * style.gain_db
    consonants = _consonant_noise(rng, layout, speaker.formant_scale, sample_rate)
    audio = gain * (speech + 10.0 ** (consonant_db / 20.0) * consonants)
    audio += 10.0 ** (speaker.noise_dbfs / 20.0) * rng.standard_normal(layout.length)
    peak = np.max(np.abs(audio))
    # Rare loud outliers are scaled down rather than clipped.
    return audio * (0.95 / peak) if peak > 0.95 else audio


def to_pcm16(audio):
    """Quantises [-1, 1] float audio to int16 deterministically."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
