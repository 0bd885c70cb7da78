"""The EmoDB adapter on a miniature tree in the release's layout."""

import os

import pytest

from mtl_ser.data.corpora import emodb
from mtl_ser.data.corpora.base import CorpusError
from tests.data.corpora.common import write_wav

NAMES = ("03a01Fa.wav", "08b02Wb.wav", "10a05Tc.wav", "16b10Na.wav", "14a07Lb.wav")


@pytest.fixture
def emodb_root(tmp_path):
    for name in NAMES:
        write_wav(str(tmp_path / "wav" / name), 16_000)
    (tmp_path / "wav" / "notes.txt").write_text("not audio")
    (tmp_path / "lablaut").mkdir()  # Other release folders are ignored.
    return str(tmp_path)


def test_names_give_speaker_text_emotion_and_gender(emodb_root):
    got = emodb.load(emodb_root)
    assert [u.uid for u in got] == sorted(n[:-4] for n in NAMES)
    first = got[0]
    assert first.path == os.path.join(emodb_root, "wav", "03a01Fa.wav")
    assert (first.speaker, first.group, first.gender) == ("03", "a01", "male")
    assert first.labels == {"emotion": "happiness", "gender": "male"}
    by_uid = {u.uid: u for u in got}
    assert by_uid["08b02Wb"].labels == {"emotion": "anger", "gender": "female"}
    assert by_uid["10a05Tc"].labels["emotion"] == "sadness"
    assert by_uid["14a07Lb"].labels["emotion"] == "boredom"
    assert by_uid["16b10Na"].gender == "female"


def test_layout_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(CorpusError, match=f"{tmp_path}/wav: EmoDB folder not found"):
        emodb.load(str(tmp_path))
    (tmp_path / "wav").mkdir()
    with pytest.raises(CorpusError, match="no EmoDB wav files"):
        emodb.load(str(tmp_path))
    write_wav(str(tmp_path / "wav" / "03a01Xa.wav"), 16_000)  # X: no emotion.
    with pytest.raises(CorpusError, match="03a01Xa.wav: not an EmoDB name"):
        emodb.load(str(tmp_path))
