"""The RAVDESS adapter on a miniature tree in the release's exact layout."""

import collections
import os

import numpy as np
import pytest
import soundfile as sf

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import audio
from mtl_ser.data.corpora import ravdess
from mtl_ser.data.corpora.base import CorpusError
from tests.data.corpora.common import FOUR_CLASSES, check_folds, write_wav


def _ravdess_name(emotion, intensity="01", actor="01", channel="01", modality="03"):
    return f"{modality}-{channel}-{emotion}-{intensity}-01-01-{actor}.wav"


@pytest.fixture
def ravdess_root(tmp_path):
    """Actors 01..04; actor 01 speaks all 8 emotions and sings once; actor 02's
    first file is stereo; the video release's mp4 and a README lie beside."""
    root = tmp_path / "ravdess"
    for code in ravdess.EMOTIONS:
        write_wav(str(root / "Actor_01" / _ravdess_name(code)), 48_000)
    write_wav(str(root / "Actor_01" / _ravdess_name("03", "02", channel="02")), 48_000)
    (root / "Actor_01" / "01-01-03-02-01-01-01.mp4").write_bytes(b"not audio")
    write_wav(
        str(root / "Actor_02" / _ravdess_name("05", "02", "02")), 48_000, channels=2
    )
    write_wav(str(root / "Actor_02" / _ravdess_name("04", actor="02")), 48_000)
    for actor in ("03", "04"):
        write_wav(
            str(root / f"Actor_{actor}" / _ravdess_name("05", actor=actor)), 48_000
        )
    (root / "README.md").write_text("RAVDESS\n")
    return str(root)


def test_ravdess_parses_names_genders_and_labels(ravdess_root):
    dropped = collections.Counter()
    utts = ravdess.load(ravdess_root, dropped=dropped)
    assert len(utts) == 8 + 2 + 2
    assert [u.uid for u in utts] == sorted(u.uid for u in utts)
    by_uid = {u.uid: u for u in utts}
    angry = by_uid["03-01-05-02-01-01-02"]
    assert angry.path == os.path.join(ravdess_root, "Actor_02", angry.uid + ".wav")
    assert (angry.speaker, angry.group, angry.gender) == ("02", "", "female")
    assert dict(angry.labels) == {
        "emotion": "anger",
        "gender": "female",
        "intensity": "strong",
        "vocal_channel": "speech",
    }
    # Codes 01..08 in the documented order, in plain English.
    actor1 = [u for u in utts if u.speaker == "01"]
    assert [u.labels["emotion"] for u in actor1] == [
        "neutral",
        "calm",
        "happiness",
        "sadness",
        "anger",
        "fear",
        "disgust",
        "surprise",
    ]
    # Odd actors are male.
    assert {u.speaker: u.gender for u in utts} == {
        "01": "male",
        "02": "female",
        "03": "male",
        "04": "female",
    }
    assert all(u.labels["gender"] == u.gender for u in utts)
    assert dropped == {ravdess.SONG_DROPPED: 1}


def test_ravdess_four_class_config_keeps_the_shared_emotions(ravdess_root):
    utts = ravdess.load(ravdess_root)
    task_list = tasks_lib.make_tasks("emotion,gender", FOUR_CLASSES, "mse")
    _, masks = tasks_lib.encode_labels(task_list, utts)
    mask = masks["emotion"]
    kept = sorted(u.labels["emotion"] for u, m in zip(utts, mask, strict=True) if m)
    assert kept == ["anger"] * 4 + ["happiness", "neutral"] + ["sadness"] * 2
    assert masks["gender"].all()


def test_ravdess_song_is_an_option(ravdess_root):
    dropped = collections.Counter()
    utts = ravdess.load(ravdess_root, include_song=True, dropped=dropped)
    songs = [u for u in utts if u.labels["vocal_channel"] == "song"]
    assert [u.uid for u in songs] == ["03-02-03-02-01-01-01"]
    assert songs[0].labels["emotion"] == "happiness"
    assert len(utts) == 13
    assert not dropped


def test_ravdess_stereo_file_is_downmixed(ravdess_root):
    path = os.path.join(ravdess_root, "Actor_02", "03-01-05-02-01-01-02.wav")
    assert sf.info(path).channels == 2
    wave = audio.load_audio(path, 48_000)
    stereo, _ = sf.read(path, dtype="float32")
    assert wave.shape == (stereo.shape[0],)
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-6)


def test_ravdess_folds_are_speaker_disjoint(ravdess_root):
    check_folds(ravdess.load(ravdess_root))


@pytest.mark.parametrize(
    "name, message",
    [
        ("02-01-05-01-01-01-03.wav", "modality 02 is a video file"),
        ("01-01-05-01-01-01-03.wav", "modality 01 is a video file"),
        ("03-01-09-01-01-01-03.wav", "not a RAVDESS name"),
        ("03-01-05-01-01-03.wav", "not a RAVDESS name"),
        ("03-01-05-01-01-01-04.wav", "says actor 04 but the file is in Actor_03/"),
        ("03-01-01-02-01-01-03.wav", "neutral has no strong intensity"),
    ],
)
def test_ravdess_rejects_bad_names_naming_the_file(ravdess_root, name, message):
    path = write_wav(os.path.join(ravdess_root, "Actor_03", name), 48_000)
    with pytest.raises(CorpusError, match=message) as e:
        ravdess.load(ravdess_root)
    assert path in str(e.value)


def test_ravdess_layout_errors_name_the_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match="RAVDESS folder not found") as e:
        ravdess.load(missing)
    assert missing in str(e.value)
    # The archive's outer folder instead of the one holding Actor_XX/.
    write_wav(
        str(tmp_path / "outer" / "inner" / "Actor_01" / _ravdess_name("01")), 48_000
    )
    with pytest.raises(CorpusError, match="no RAVDESS actor folders"):
        ravdess.load(str(tmp_path / "outer"))
    # Only song files, and song not asked for.
    write_wav(
        str(tmp_path / "song" / "Actor_01" / _ravdess_name("01", channel="02")), 48_000
    )
    with pytest.raises(CorpusError, match="1 left out"):
        ravdess.load(str(tmp_path / "song"))
