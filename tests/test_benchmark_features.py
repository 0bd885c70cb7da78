"""benchmarks/features.py: the clips it times are the corpus's voices."""

import numpy as np

from benchmarks import features
from mtl_ser.data.voice import synth


def test_clips_are_synthetic_utterances_repeated_to_length():
    clips = features.make_clips(3, 40_000, 16_000)
    assert clips.shape == (3, 40_000) and clips.dtype == np.float32
    for i, clip in enumerate(clips):
        wave, _ = synth.synthesize(0, i % 10, i, 16_000)
        n = min(len(wave), 40_000)
        np.testing.assert_allclose(clip[:n], np.float32(wave[:n]))
        assert np.abs(clip).max() > 0.01  # Speech, not silence.
