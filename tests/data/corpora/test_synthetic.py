"""Tests of the built-in synthetic emotional speech corpus."""

import collections
import csv
import filecmp
import os

import numpy as np
import pytest
import soundfile

from mtl_ser.data.corpora import synthetic
from mtl_ser.data.corpora.base import CorpusError

NUM_SPEAKERS = 4
PER_SPEAKER = 16  # 4 utterances per emotion and speaker


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.generate(
        root, num_speakers=NUM_SPEAKERS, utterances_per_speaker=PER_SPEAKER
    )
    return root


@pytest.fixture(scope="module")
def utterances(corpus_root):
    return synthetic.load(corpus_root)


def _read_manifest(root):
    with open(os.path.join(root, synthetic.MANIFEST_NAME), newline="") as f:
        return list(csv.DictReader(f))


def _frames(audio, frame_length, hop_length):
    """Centred, zero-padded frames [num_frames, frame_length] (librosa's layout)."""
    padded = np.pad(audio, frame_length // 2)
    count = 1 + (len(padded) - frame_length) // hop_length
    index = np.arange(frame_length)[None, :] + hop_length * np.arange(count)[:, None]
    return padded[index]


def _yin(frames, sample_rate, fmin, fmax, threshold=0.1):
    """YIN F0 (de Cheveigne & Kawahara 2002) per frame, in numpy.

    librosa.yin runs a numba gufunc that segfaulted a CI worker, so the test
    carries its own: cumulative-mean-normalised difference, first dip under
    `threshold` (else the global minimum), parabolic refinement.
    """
    length = frames.shape[1]
    min_lag, max_lag = int(sample_rate // fmax), int(sample_rate // fmin)
    width = length - max_lag - 1
    head = frames[:, :width]
    # r[t] = sum_j x[j] x[j + t] over the first `width` samples, for all lags.
    spec = np.fft.rfft(frames, 2 * length) * np.conj(np.fft.rfft(head, 2 * length))
    corr = np.fft.irfft(spec, 2 * length)[:, : max_lag + 2]
    energy = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    lags = np.arange(max_lag + 2)
    shifted = energy[:, lags + width] - energy[:, lags]  # sum of x[t : t + width]^2
    diff = np.maximum(shifted[:, :1] + shifted - 2 * corr, 0.0)
    cum = np.cumsum(diff[:, 1:], axis=1) / lags[1:]
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] / np.maximum(cum, 1e-12)
    search = cmnd[:, min_lag : max_lag + 1]
    below = search < threshold
    # First local dip under the threshold: walk down from the first crossing.
    first = np.where(below.any(1), below.argmax(1), search.argmin(1))
    lag = first + min_lag
    for _ in range(max_lag):
        step = (lag < max_lag) & (
            cmnd[np.arange(len(lag)), lag + 1] < cmnd[np.arange(len(lag)), lag]
        )
        if not step.any():
            break
        lag = lag + step
    rows = np.arange(len(lag))
    left, mid, right = cmnd[rows, lag - 1], cmnd[rows, lag], cmnd[rows, lag + 1]
    curve = left - 2 * mid + right
    shift = np.where(curve > 0, 0.5 * (left - right) / np.where(curve > 0, curve, 1), 0)
    return sample_rate / (lag + np.clip(shift, -1, 1))


def _voiced_f0_and_rms(path):
    """Returns YIN F0 of loud (voiced) frames and the RMS of those frames."""
    audio, sample_rate = soundfile.read(path)
    frames = _frames(audio, frame_length=1024, hop_length=160)
    f0 = _yin(frames, sample_rate, fmin=60, fmax=600)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = rms > 0.2 * rms.max()
    return f0[loud], rms[loud]


def test_yin_finds_the_pitch_of_a_harmonic_tone():
    sample_rate = 16000
    t = np.arange(sample_rate) / sample_rate
    for f0 in (95.0, 180.0, 310.0):
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        frames = _frames(tone, 1024, 160)[10:-10]
        estimate = _yin(frames, sample_rate, fmin=60, fmax=600)
        np.testing.assert_allclose(np.median(estimate), f0, rtol=0.01)


@pytest.fixture(scope="module")
def prosody(utterances):
    """Maps (speaker, emotion) to (pooled voiced F0, mean voiced RMS in dB)."""
    f0s, levels = collections.defaultdict(list), collections.defaultdict(list)
    for u in utterances:
        f0, rms = _voiced_f0_and_rms(u.path)
        key = (u.speaker, u.labels["emotion"])
        f0s[key].append(f0)
        levels[key].append(20 * np.log10(np.mean(rms)))
    return {k: (np.concatenate(f0s[k]), np.mean(levels[k])) for k in f0s}


def test_manifest_lists_every_utterance(corpus_root):
    rows = _read_manifest(corpus_root)
    assert tuple(rows[0].keys()) == synthetic.MANIFEST_COLUMNS
    assert len(rows) == NUM_SPEAKERS * PER_SPEAKER
    assert rows[0]["uid"] == "spk00_000"
    assert rows[-1]["uid"] == f"spk03_{PER_SPEAKER - 1:03d}"
    for row in rows:
        assert row["path"] == os.path.join("wav", row["uid"] + ".wav")
        assert row["uid"].startswith(row["speaker"] + "_")
        assert os.path.isfile(os.path.join(corpus_root, row["path"]))
        assert 0.3 <= float(row["intensity"]) <= 1.0


def test_generation_is_deterministic_and_size_independent(tmp_path, corpus_root):
    small = dict(num_speakers=2, utterances_per_speaker=4)
    first = synthetic.generate(str(tmp_path / "a"), **small)
    second = synthetic.generate(str(tmp_path / "b"), **small)
    assert filecmp.cmp(first, second, shallow=False)
    for row in _read_manifest(str(tmp_path / "a")):
        wav_a = tmp_path / "a" / row["path"]
        assert filecmp.cmp(wav_a, tmp_path / "b" / row["path"], shallow=False)
        # Per-utterance seeding: the same uid is identical in a larger corpus.
        assert filecmp.cmp(wav_a, os.path.join(corpus_root, row["path"]), False)


def test_seed_changes_the_audio(tmp_path):
    small = dict(num_speakers=2, utterances_per_speaker=4)
    synthetic.generate(str(tmp_path / "s0"), seed=0, **small)
    synthetic.generate(str(tmp_path / "s1"), seed=1, **small)
    wav = os.path.join("wav", "spk00_000.wav")
    assert not filecmp.cmp(tmp_path / "s0" / wav, tmp_path / "s1" / wav, False)


def test_load_returns_labelled_utterances(utterances):
    assert len(utterances) == NUM_SPEAKERS * PER_SPEAKER
    for u in utterances:
        assert os.path.isabs(u.path) and os.path.isfile(u.path)
        assert u.group == ""
        assert set(u.labels) == {"emotion", "gender", "arousal", "valence", "dominance"}
        assert u.labels["emotion"] in synthetic.EMOTIONS
        assert u.labels["gender"] == u.gender
        for name in ("arousal", "valence", "dominance"):
            assert isinstance(u.labels[name], float)
            assert 1.0 <= u.labels[name] <= 5.0


def test_emotions_balanced_and_gender_follows_speaker_parity(utterances):
    counts = collections.Counter((u.speaker, u.labels["emotion"]) for u in utterances)
    expected = PER_SPEAKER // len(synthetic.EMOTIONS)
    assert set(counts.values()) == {expected}
    assert len(counts) == NUM_SPEAKERS * len(synthetic.EMOTIONS)
    for u in utterances:
        parity = int(u.speaker[3:]) % 2
        assert u.gender == ("female" if parity == 0 else "male")


def test_dimensional_labels_follow_the_prototypes(utterances):
    def mean(emotion, name):
        values = [u.labels[name] for u in utterances if u.labels["emotion"] == emotion]
        return np.mean(values)

    arousal = {e: mean(e, "arousal") for e in synthetic.EMOTIONS}
    valence = {e: mean(e, "valence") for e in synthetic.EMOTIONS}
    dominance = {e: mean(e, "dominance") for e in synthetic.EMOTIONS}
    assert arousal["anger"] > arousal["neutral"] > arousal["sadness"]
    assert arousal["happiness"] > arousal["neutral"]
    assert valence["happiness"] > valence["neutral"] > valence["anger"]
    assert valence["neutral"] > valence["sadness"]
    assert dominance["anger"] > dominance["happiness"] > dominance["neutral"]
    assert dominance["neutral"] > dominance["sadness"]


def test_audio_is_16k_mono_pcm_of_valid_duration(utterances):
    for u in utterances:
        info = soundfile.info(u.path)
        assert info.samplerate == 16000 and info.channels == 1
        assert info.subtype == "PCM_16"
        assert 1.5 <= info.duration <= 4.0
        audio, _ = soundfile.read(u.path, dtype="int16")
        peak = np.max(np.abs(audio.astype(np.int32)))
        assert peak < 32767, "clipped"
        rms_db = 20 * np.log10(np.sqrt(np.mean((audio / 32768.0) ** 2)))
        assert rms_db > -50.0, "silent"
        # The leading 50 ms are background noise, well below the speech.
        lead = audio[:800] / 32768.0
        assert 20 * np.log10(np.sqrt(np.mean(lead**2))) < rms_db - 20.0


def test_f0_is_ordered_by_emotion_within_each_speaker(prosody):
    for index in range(NUM_SPEAKERS):
        speaker = f"spk{index:02d}"
        median = {e: np.median(prosody[(speaker, e)][0]) for e in synthetic.EMOTIONS}
        assert median["happiness"] > median["anger"] > median["neutral"], speaker
        assert median["neutral"] > median["sadness"], speaker


def test_f0_range_matches_gender(prosody):
    for index in range(NUM_SPEAKERS):
        neutral = np.median(prosody[(f"spk{index:02d}", "neutral")][0])
        if index % 2 == 0:
            assert 160.0 < neutral < 290.0
        else:
            assert 80.0 < neutral < 175.0


def test_anger_is_louder_than_sadness(prosody):
    for index in range(NUM_SPEAKERS):
        speaker = f"spk{index:02d}"
        loudness = prosody[(speaker, "anger")][1] - prosody[(speaker, "sadness")][1]
        assert loudness > 4.0, speaker


def test_existing_corpus_is_not_regenerated(tmp_path):
    root = str(tmp_path)
    manifest = synthetic.generate(root, num_speakers=2, utterances_per_speaker=4)
    wav = tmp_path / "wav" / "spk00_000.wav"
    wav.unlink()
    # Same parameters: returns at once, so the deleted wav stays deleted.
    assert synthetic.generate(root, num_speakers=2, utterances_per_speaker=4) == (
        manifest
    )
    assert not wav.exists()
    # Other parameters: the corpus is rebuilt.
    synthetic.generate(root, num_speakers=2, utterances_per_speaker=8)
    assert wav.exists()
    assert len(_read_manifest(root)) == 16


def test_load_names_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CorpusError, match="generate") as error:
        synthetic.load(str(missing))
    assert str(missing) in str(error.value)


def test_load_names_missing_manifest(tmp_path):
    with pytest.raises(CorpusError, match="generate") as error:
        synthetic.load(str(tmp_path))
    assert str(tmp_path / synthetic.MANIFEST_NAME) in str(error.value)


def test_load_names_missing_wav(tmp_path):
    synthetic.generate(str(tmp_path), num_speakers=2, utterances_per_speaker=4)
    wav = tmp_path / "wav" / "spk01_002.wav"
    wav.unlink()
    with pytest.raises(CorpusError) as error:
        synthetic.load(str(tmp_path))
    assert str(wav) in str(error.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_speakers=3), "num_speakers"),
        (dict(num_speakers=0), "num_speakers"),
        (dict(utterances_per_speaker=6), "utterances_per_speaker"),
        (dict(utterances_per_speaker=0), "utterances_per_speaker"),
        (dict(seed=-1), "seed"),
    ],
)
def test_invalid_arguments_are_named(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic.generate(str(tmp_path), **kwargs)
    assert not (tmp_path / synthetic.MANIFEST_NAME).exists()
