"""RAVDESS and CREMA-D adapters on miniature trees in the releases' exact layouts."""

import collections
import os

import numpy as np
import pytest
import soundfile as sf

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import audio, splits
from mtl_ser.data.corpora import cremad, ravdess
from mtl_ser.data.corpora.base import CorpusError

FOUR_CLASSES = "anger,happiness,neutral,sadness"


def _wav(path, rate, channels=1, seconds=0.2):
    """A short sine (one frequency per channel), 16-bit PCM as in both releases."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (220, 330)[:channels]])
    sf.write(path, wave.T, rate, subtype="PCM_16")
    return path


def _check_folds(utterances):
    speakers = {u.speaker for u in utterances}
    for folds in (
        splits.cv_folds(utterances, "speaker"),
        splits.cv_folds(utterances, "kfold", num_folds=3),
    ):
        tested = [s for f in folds for s in f.test_speakers]
        assert sorted(tested) == sorted(speakers)  # Each speaker tested once.
        for f in folds:
            assert not set(f.val_speakers) & set(f.test_speakers)
            assert speakers - set(f.val_speakers) - set(f.test_speakers)


# ---------------------------------------------------------------- RAVDESS


def _ravdess_name(emotion, intensity="01", actor="01", channel="01", modality="03"):
    return f"{modality}-{channel}-{emotion}-{intensity}-01-01-{actor}.wav"


@pytest.fixture
def ravdess_root(tmp_path):
    """Actors 01..04; actor 01 speaks all 8 emotions and sings once; actor 02's
    first file is stereo; the video release's mp4 and a README lie beside."""
    root = tmp_path / "ravdess"
    for code in ravdess.EMOTIONS:
        _wav(str(root / "Actor_01" / _ravdess_name(code)), 48_000)
    _wav(str(root / "Actor_01" / _ravdess_name("03", "02", channel="02")), 48_000)
    (root / "Actor_01" / "01-01-03-02-01-01-01.mp4").write_bytes(b"not audio")
    _wav(str(root / "Actor_02" / _ravdess_name("05", "02", "02")), 48_000, channels=2)
    _wav(str(root / "Actor_02" / _ravdess_name("04", actor="02")), 48_000)
    for actor in ("03", "04"):
        _wav(str(root / f"Actor_{actor}" / _ravdess_name("05", actor=actor)), 48_000)
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
    _check_folds(ravdess.load(ravdess_root))


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
    path = _wav(os.path.join(ravdess_root, "Actor_03", name), 48_000)
    with pytest.raises(CorpusError, match=message) as e:
        ravdess.load(ravdess_root)
    assert path in str(e.value)


def test_ravdess_layout_errors_name_the_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match="RAVDESS folder not found") as e:
        ravdess.load(missing)
    assert missing in str(e.value)
    # The archive's outer folder instead of the one holding Actor_XX/.
    _wav(str(tmp_path / "outer" / "inner" / "Actor_01" / _ravdess_name("01")), 48_000)
    with pytest.raises(CorpusError, match="no RAVDESS actor folders"):
        ravdess.load(str(tmp_path / "outer"))
    # Only song files, and song not asked for.
    _wav(
        str(tmp_path / "song" / "Actor_01" / _ravdess_name("01", channel="02")), 48_000
    )
    with pytest.raises(CorpusError, match="1 left out"):
        ravdess.load(str(tmp_path / "song"))


# ---------------------------------------------------------------- CREMA-D

_HEADER = '"ActorID","Age","Sex","Race","Ethnicity"\n'
_ROWS = {
    "1001": '1001,51,"Male","Caucasian","Not Hispanic"\n',
    "1002": '1002,21,"Female","Caucasian","Not Hispanic"\n',
    "1003": '1003,21,"Female","Caucasian","Not Hispanic"\n',
    "1005": '1005,29,"Male","African American","Not Hispanic"\n',
}
_CREMAD_FILES = (
    "1001_DFA_ANG_XX",
    "1001_IEO_HAP_HI",
    "1001_IEO_DIS_LO",
    "1002_IEO_SAD_MD",
    "1002_TIE_NEU_XX",
    "1003_IEO_FEA_HI",
    "1003_WSI_ANG_XX",
    "1005_MTI_SAD_XX",
)


@pytest.fixture
def cremad_root(tmp_path):
    root = tmp_path / "CREMA-D"
    for stem in _CREMAD_FILES:
        _wav(str(root / "AudioWAV" / f"{stem}.wav"), 16_000)
    (root / "AudioWAV" / "1001_DFA_ANG_XX.mp3").write_bytes(b"not read")
    (root / cremad.DEMOGRAPHICS).write_text(_HEADER + "".join(_ROWS.values()))
    return str(root)


def test_cremad_parses_names_genders_and_labels(cremad_root):
    utts = cremad.load(cremad_root)
    assert [u.uid for u in utts] == sorted(_CREMAD_FILES)
    by_uid = {u.uid: u for u in utts}
    happy = by_uid["1001_IEO_HAP_HI"]
    assert happy.path == os.path.join(cremad_root, "AudioWAV", "1001_IEO_HAP_HI.wav")
    assert (happy.speaker, happy.group, happy.gender) == ("1001", "", "male")
    assert dict(happy.labels) == {
        "emotion": "happiness",
        "gender": "male",
        "intensity": "high",
    }
    assert {u.speaker: u.gender for u in utts} == {
        "1001": "male",
        "1002": "female",
        "1003": "female",
        "1005": "male",
    }
    assert sorted({u.labels["emotion"] for u in utts}) == sorted(
        cremad.EMOTIONS.values()
    )
    assert [by_uid[s].labels["intensity"] for s in _CREMAD_FILES[:4]] == [
        "unspecified",
        "high",
        "low",
        "medium",
    ]
    task_list = tasks_lib.make_tasks("emotion", FOUR_CLASSES, "mse")
    _, masks = tasks_lib.encode_labels(task_list, utts)
    assert masks["emotion"].sum() == 6  # DIS and FEA fall outside 4 classes.


def test_cremad_folds_are_speaker_disjoint(cremad_root):
    _check_folds(cremad.load(cremad_root))


def test_cremad_missing_demographics_names_the_file(cremad_root):
    csv_path = os.path.join(cremad_root, cremad.DEMOGRAPHICS)
    os.remove(csv_path)
    with pytest.raises(CorpusError, match="demographics file not found") as e:
        cremad.load(cremad_root)
    assert csv_path in str(e.value)


def test_cremad_actor_absent_from_demographics(cremad_root):
    csv_path = os.path.join(cremad_root, cremad.DEMOGRAPHICS)
    with open(csv_path, "w") as f:
        f.write(_HEADER + _ROWS["1001"] + _ROWS["1002"] + _ROWS["1003"])
    with pytest.raises(CorpusError, match="actor 1005 is not in") as e:
        cremad.load(cremad_root)
    assert csv_path in str(e.value)
    assert "1005_MTI_SAD_XX.wav" in str(e.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (_HEADER + _ROWS["1001"] + '1002,21,"F","Caucasian","x"\n', r":3: Sex 'F'"),
        (_HEADER + _ROWS["1001"] + _ROWS["1001"], ":3: actor 1001 is listed twice"),
        (_HEADER + '"1x",21,"Male","Asian","x"\n', r":2: ActorID '1x' is not 4"),
        ('"ActorID","Age","Gender"\n' + "1001,51,Male\n", r":1: no \['Sex'\] column"),
    ],
)
def test_cremad_malformed_demographics_name_file_and_line(cremad_root, text, message):
    csv_path = os.path.join(cremad_root, cremad.DEMOGRAPHICS)
    with open(csv_path, "w") as f:
        f.write(text)
    with pytest.raises(CorpusError, match=message) as e:
        cremad.load(cremad_root)
    assert csv_path in str(e.value)


@pytest.mark.parametrize(
    "name, message",
    [
        ("1001_IEO_ANG.wav", "not a CREMA-D name"),
        ("1001_IEO_CAL_XX.wav", "not a CREMA-D name"),
        ("1001_IEO_ANG_XY.wav", "not a CREMA-D name"),
        ("1001_ABC_ANG_XX.wav", "unknown sentence code 'ABC'"),
    ],
)
def test_cremad_rejects_bad_names_naming_the_file(cremad_root, name, message):
    path = _wav(os.path.join(cremad_root, "AudioWAV", name), 16_000)
    with pytest.raises(CorpusError, match=message) as e:
        cremad.load(cremad_root)
    assert path in str(e.value)


def test_cremad_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(CorpusError, match="CREMA-D folder not found") as e:
        cremad.load(str(tmp_path))
    assert os.path.join(str(tmp_path), "AudioWAV") in str(e.value)
    os.makedirs(tmp_path / "AudioWAV")
    (tmp_path / cremad.DEMOGRAPHICS).write_text(_HEADER + _ROWS["1001"])
    with pytest.raises(CorpusError, match="no CREMA-D wav files"):
        cremad.load(str(tmp_path))
