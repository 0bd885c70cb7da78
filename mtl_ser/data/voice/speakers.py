"""The synthetic corpus's speakers and emotions: fixed speaker traits, and
each emotion's prosody and voice settings relative to the speaker's baseline,
after Murray & Arnott (1993): anger is raised, wide, fast, loud, abrupt and
tense; happiness is much higher, wider, faster and smooth; sadness is lower,
narrow, slow, soft, falling and breathy. A per-utterance intensity scales how
far the prosody departs from neutral, so cues overlap across speakers and
genders.
"""

import dataclasses

import numpy as np

EMOTIONS = ("anger", "happiness", "neutral", "sadness")

# Separate seed streams keep speaker traits independent of utterance draws.
SPEAKER_STREAM = 0
UTTERANCE_STREAM = 1

# Prototype (arousal, valence, dominance) of each emotion at full intensity.
_AVD_PROTOTYPES = {
    "anger": (4.3, 1.8, 4.0),
    "happiness": (4.0, 4.4, 3.5),
    "neutral": (3.0, 3.0, 3.0),
    "sadness": (1.8, 1.7, 2.0),
}
_AVD_NOISE = 0.15


@dataclasses.dataclass(frozen=True)
class Speaker:
    """Fixed traits of one synthetic speaker."""

    name: str
    gender: str
    formant_scale: float  # vocal-tract length factor (shorter tract > 1)
    f0: float  # baseline F0 in Hz
    tilt: float  # one-pole low-pass coefficient applied to the source
    breath: float  # aspiration noise relative to the voiced source
    rate: float  # habitual speaking-rate factor
    gain_db: float  # habitual loudness offset
    noise_dbfs: float  # background noise floor of the "recording"


@dataclasses.dataclass(frozen=True)
class Style:
    """Prosody and voice settings; one per emotion at full intensity."""

    f0_shift: float  # semitones relative to the speaker's baseline F0
    f0_range: float  # size of pitch accents in semitones
    declination: float  # semitones F0 falls over the utterance
    fall: float  # semitones each syllable falls (downward inflections)
    accent_prob: float  # fraction of syllables carrying a pitch accent
    abrupt: float  # 0: smooth rise-fall accents, 1: sharp onsets
    rate: float  # speaking-rate factor
    pause_prob: float  # chance of a pause after a syllable
    gain_db: float  # loudness offset
    attack: float  # syllable onset time in seconds
    tilt: float  # added to the speaker's source tilt (negative: tenser)
    closing: float  # Rosenberg closing phase (short: tense, long: lax)
    breath: float  # added aspiration noise
    jitter: float  # relative period perturbation per cycle
    shimmer: float  # relative amplitude perturbation per cycle


STYLES = {
    "neutral": Style(
        f0_shift=0.0,
        f0_range=2.0,
        declination=3.0,
        fall=0.5,
        accent_prob=0.4,
        abrupt=0.0,
        rate=1.0,
        pause_prob=0.1,
        gain_db=0.0,
        attack=0.025,
        tilt=0.0,
        closing=0.16,
        breath=0.0,
        jitter=0.006,
        shimmer=0.04,
    ),
    "anger": Style(
        f0_shift=2.5,
        f0_range=4.0,
        declination=4.0,
        fall=1.5,
        accent_prob=0.6,
        abrupt=1.0,
        rate=1.25,
        pause_prob=0.05,
        gain_db=7.0,
        attack=0.006,
        tilt=-0.3,
        closing=0.08,
        breath=-0.03,
        jitter=0.009,
        shimmer=0.06,
    ),
    "happiness": Style(
        f0_shift=7.0,
        f0_range=5.0,
        declination=1.0,
        fall=0.0,
        accent_prob=0.7,
        abrupt=0.0,
        rate=1.15,
        pause_prob=0.08,
        gain_db=3.0,
        attack=0.04,
        tilt=-0.08,
        closing=0.14,
        breath=0.0,
        jitter=0.005,
        shimmer=0.035,
    ),
    "sadness": Style(
        f0_shift=-3.5,
        f0_range=0.8,
        declination=5.0,
        fall=2.0,
        accent_prob=0.2,
        abrupt=0.0,
        rate=0.75,
        pause_prob=0.25,
        gain_db=-7.0,
        attack=0.06,
        tilt=0.12,
        closing=0.3,
        breath=0.15,
        jitter=0.012,
        shimmer=0.07,
    ),
}


def speaker_name(index):
    """Returns the id of speaker `index`, e.g. "spk03"."""
    return f"spk{index:02d}"


def speaker_gender(index):
    """Returns "female" for even speaker indices and "male" for odd ones.

    Alternating keeps any split by speaker index gender balanced.
    """
    return "female" if index % 2 == 0 else "male"


def speaker_profile(seed, index):
    """Draws the fixed traits of speaker `index` from its own seed stream."""
    rng = np.random.default_rng([seed, SPEAKER_STREAM, index])
    gender = speaker_gender(index)
    if gender == "female":
        scale, f0 = rng.uniform(1.1, 1.2), rng.uniform(170.0, 250.0)
    else:
        scale, f0 = rng.uniform(0.85, 1.0), rng.uniform(90.0, 150.0)
    return Speaker(
        name=speaker_name(index),
        gender=gender,
        formant_scale=scale,
        f0=f0,
        tilt=rng.uniform(0.5, 0.8),
        breath=rng.uniform(0.02, 0.1),
        rate=float(np.exp(rng.normal(0.0, 0.08))),
        gain_db=rng.normal(0.0, 1.5),
        noise_dbfs=rng.uniform(-70.0, -58.0),
    )


def blend(emotion, intensity):
    """Interpolates every style setting from neutral towards `emotion`."""
    neutral, target = STYLES["neutral"], STYLES[emotion]
    mixed = {
        field.name: (1.0 - intensity) * getattr(neutral, field.name)
        + intensity * getattr(target, field.name)
        for field in dataclasses.fields(Style)
    }
    return Style(**mixed)


def avd_labels(rng, emotion, intensity):
    """Returns (arousal, valence, dominance) moved from 3 towards the prototype."""
    prototype = np.asarray(_AVD_PROTOTYPES[emotion])
    values = 3.0 + intensity * (prototype - 3.0) + rng.normal(0.0, _AVD_NOISE, 3)
    return tuple(float(v) for v in np.clip(values, 1.0, 5.0))
