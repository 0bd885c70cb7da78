"""The source-filter synthesiser of one utterance."""

import numpy as np

from mtl_ser.data.voice import speakers, synth


def test_an_utterance_is_deterministic_bounded_and_labelled():
    audio, info = synth.synthesize(3, 1, 6, sample_rate=16000)
    again, info_again = synth.synthesize(3, 1, 6, sample_rate=16000)
    np.testing.assert_array_equal(audio, again)
    assert info == info_again
    assert info["emotion"] == speakers.EMOTIONS[6 % 4]
    assert 0.3 <= info["intensity"] <= 1.0
    assert audio.ndim == 1 and 0.5 * 16000 < len(audio) < 10 * 16000
    assert np.max(np.abs(audio)) <= 0.95 + 1e-12
    assert not np.array_equal(audio[:1000], synth.synthesize(4, 1, 6)[0][:1000])


def test_the_sample_rate_sets_the_length_not_the_draws():
    a, info_a = synth.synthesize(0, 0, 1, sample_rate=16000)
    b, info_b = synth.synthesize(0, 0, 1, sample_rate=8000)
    assert info_a == info_b
    assert abs(len(a) / 16000 - len(b) / 8000) < 0.05


def test_pcm16_rounds_and_clips():
    x = np.array([-1.5, -1.0, -0.5, 0.0, 1e-5, 0.5, 1.0, 2.0])
    got = synth.to_pcm16(x)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(
        got, [-32767, -32767, -16384, 0, 0, 16384, 32767, 32767]
    )
