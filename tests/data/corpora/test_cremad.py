"""The CREMA-D adapter on a miniature tree in the release's exact layout."""

import os

import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.data.corpora import cremad
from mtl_ser.data.corpora.base import CorpusError
from tests.data.corpora.common import FOUR_CLASSES, check_folds, write_wav

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
        write_wav(str(root / "AudioWAV" / f"{stem}.wav"), 16_000)
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
    check_folds(cremad.load(cremad_root))


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
    path = write_wav(os.path.join(cremad_root, "AudioWAV", name), 16_000)
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
