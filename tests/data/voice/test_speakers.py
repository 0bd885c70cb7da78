"""Speaker traits and emotion styles of the synthetic voices."""

import dataclasses

import numpy as np
import pytest

from mtl_ser.data.voice import speakers


def test_speakers_alternate_gender_and_keep_their_traits_per_seed():
    assert [speakers.speaker_gender(i) for i in range(4)] == [
        "female",
        "male",
        "female",
        "male",
    ]
    assert speakers.speaker_name(7) == "spk07"
    for i in range(6):
        a, b = speakers.speaker_profile(0, i), speakers.speaker_profile(0, i)
        assert a == b  # Drawn from the speaker's own stream.
        female = a.gender == "female"
        assert (170.0 <= a.f0 <= 250.0) if female else (90.0 <= a.f0 <= 150.0)
        assert a.formant_scale > 1.0 if female else a.formant_scale <= 1.0
    assert speakers.speaker_profile(0, 2) != speakers.speaker_profile(1, 2)


def test_blend_interpolates_every_setting_from_neutral():
    neutral, anger = speakers.STYLES["neutral"], speakers.STYLES["anger"]
    assert speakers.blend("anger", 0.0) == neutral
    assert speakers.blend("anger", 1.0) == anger
    half = speakers.blend("anger", 0.5)
    for field in dataclasses.fields(speakers.Style):
        want = (getattr(neutral, field.name) + getattr(anger, field.name)) / 2
        assert getattr(half, field.name) == pytest.approx(want)


@pytest.mark.parametrize("emotion", speakers.EMOTIONS)
def test_labels_move_from_three_towards_the_emotions_prototype(emotion):
    rng = np.random.default_rng(0)
    weak = np.mean([speakers.avd_labels(rng, emotion, 0.2) for _ in range(400)], 0)
    strong = np.mean([speakers.avd_labels(rng, emotion, 1.0) for _ in range(400)], 0)
    prototype = np.array(speakers._AVD_PROTOTYPES[emotion])
    np.testing.assert_allclose(strong, prototype, atol=0.03)
    np.testing.assert_allclose(weak, 3.0 + 0.2 * (prototype - 3.0), atol=0.03)
    values = [speakers.avd_labels(rng, emotion, 1.0) for _ in range(200)]
    assert np.min(values) >= 1.0 and np.max(values) <= 5.0
