"""Tests of the IEMOCAP adapter on a miniature tree in the release layout."""

import collections
import os
import re
import shutil

import numpy as np
import pytest
import soundfile

from mtl_ser.data import splits
from mtl_ser.data.corpora import iemocap
from mtl_ser.data.corpora.base import CorpusError
from mtl_ser.errors import ConfigError

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
# Session -> dialog -> (last id field, raw label, valence, activation, dominance).
# Session 3's impro05a/05b/08a/08b and Ses05M_script01_1b carry utterances
# whose speaker letter (last field) differs from the SesNN letter.
TREE = {
    1: {
        "Ses01F_impro01": [
            ("F000", "neu", 2.5, 2.5, 2.5),
            ("M000", "ang", 1.5, 4.0, 4.5),
            ("F001", "fru", 2.0, 3.5, 3.0),
            ("M001", "xxx", 2.5, 3.0, 3.0),
        ],
        "Ses01F_script01_1": [
            ("F000", "hap", 4.0, 3.0, 3.0),
            ("M000", "exc", 4.5, 4.0, 3.5),
            ("M001", "sad", 1.5, 1.5, 2.0),
        ],
    },
    2: {
        "Ses02M_impro02": [
            ("F000", "sad", 2.0, 2.0, 2.5),
            ("M000", "neu", 3.0, 2.0, 3.0),
            ("M001", "exc", 4.0, 4.5, 4.0),
        ],
        "Ses02F_script02_2": [
            ("F000", "hap", 4.5, 3.5, 3.0),
            ("M000", "sur", 3.5, 4.0, 2.5),
        ],
    },
    3: {
        "Ses03M_impro05a": [
            ("F000", "ang", 1.0, 4.5, 4.0),
            ("M000", "fru", 2.0, 3.0, 3.5),
        ],
        "Ses03M_impro05b": [
            ("F000", "sad", 1.5, 2.0, 2.0),
            ("F001", "neu", 3.0, 2.5, 3.0),
        ],
        "Ses03M_impro08a": [
            ("F002", "exc", 4.0, 4.0, 3.5),
            ("M000", "neu", 3.0, 3.0, 3.0),
        ],
        "Ses03M_impro08b": [
            ("F003", "hap", 4.5, 3.0, 3.0),
            ("M001", "ang", 1.5, 4.0, 4.0),
        ],
    },
    4: {
        "Ses04F_script03_2": [
            ("F000", "ang", 2.0, 4.0, 4.5),
            ("M000", "neu", 3.0, 2.5, 2.5),
            ("M001", "dis", 2.0, 3.0, 3.5),
        ],
    },
    5: {
        "Ses05M_script01_1b": [
            ("F000", "ang", 1.5, 4.5, 4.0),
            ("F001", "hap", 4.0, 3.5, 3.0),
            ("M000", "exc", 4.5, 4.0, 4.0),
        ],
        "Ses05F_impro03": [
            ("F000", "neu", 3.0, 2.0, 3.0),
            ("M000", "fea", 2.0, 3.5, 1.5),
            ("M001", "oth", 2.5, 2.5, 2.5),
        ],
    },
}
RAW_COUNTS = {
    "ang": 5,
    "neu": 6,
    "sad": 3,
    "hap": 4,
    "exc": 4,
    "fru": 2,
    "xxx": 1,
    "sur": 1,
    "dis": 1,
    "fea": 1,
    "oth": 1,
}
EVALUATOR_LINES = (
    "C-E1:\tNeutral;\t()",
    "C-E3:\tAnger; Frustration;\t()",
    "C-F1:\tNeutral;\t(curious)",
    "A-E3:\tval 3; act 2; dom  2;\t()",
    "A-F1:\tval 1; act 5; dom  5;\t(threatening, belligerent)",
)


def _write_label_file(path, dialog, rows, newline="\n"):
    """Writes one EmoEvaluation file; returns {uid: line number of its line}."""
    lines, where, start = [HEADER, ""], {}, 2.0
    for last, raw, v, a, d in rows:
        uid = f"{dialog}_{last}"
        where[uid] = len(lines) + 1
        lines.append(
            f"[{start:.4f} - {start + 1.5:.4f}]\t{uid}\t{raw}\t"
            f"[{v:.4f}, {a:.4f}, {d:.4f}]"
        )
        lines.extend(EVALUATOR_LINES)
        lines.append("")
        start += 3.0
    with open(path, "w", newline="") as f:  # Line ends exactly as given.
        f.write(newline.join(lines) + newline)
    return where


def _build(parent, tree=TREE):
    """Writes the tree under parent/IEMOCAP_full_release; returns (release, lines)."""
    release = os.path.join(parent, iemocap.RELEASE_DIR)
    t = np.arange(3200) / 16000  # 0.2 s at IEMOCAP's 16 kHz, mono.
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    lines = {}
    for session, dialogs in tree.items():
        label_dir = os.path.join(
            release, f"Session{session}", "dialog", "EmoEvaluation"
        )
        os.makedirs(os.path.join(label_dir, "Categorical"))
        os.makedirs(os.path.join(label_dir, "backup.txt"))  # A folder, not a file.
        # Sub-folder files and AppleDouble files are not label files: if read,
        # their lines would be malformed.
        with open(os.path.join(label_dir, "Categorical", "x_e1_cat.txt"), "w") as f:
            f.write("Ses01F_impro01_F000 :Neutral state; ()\n")
        with open(os.path.join(label_dir, f"._Ses0{session}_notes.txt"), "wb") as f:
            f.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
        for dialog, rows in dialogs.items():
            newline = "\r\n" if session == 4 else "\n"
            path = os.path.join(label_dir, f"{dialog}.txt")
            for uid, line in _write_label_file(path, dialog, rows, newline).items():
                lines[uid] = f"{path}:{line}"
            wav_dir = os.path.join(release, f"Session{session}", "sentences", "wav")
            os.makedirs(os.path.join(wav_dir, dialog))
            for row in rows:
                wav = os.path.join(wav_dir, dialog, f"{dialog}_{row[0]}.wav")
                soundfile.write(wav, audio, 16000, subtype="PCM_16")
    return release, lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _build(str(tmp_path_factory.mktemp("iemocap")))


@pytest.fixture(scope="module")
def release(corpus):
    return corpus[0]


def _rows():
    """(uid, raw, v, a, d) for every labelled utterance of TREE."""
    return [
        (f"{dialog}_{last}", raw, v, a, d)
        for dialogs in TREE.values()
        for dialog, rows in dialogs.items()
        for last, raw, v, a, d in rows
    ]


def test_tree_counts_are_as_written():
    assert collections.Counter(r[1] for r in _rows()) == RAW_COUNTS


def test_paper4_exc_keeps_four_classes_and_counts_the_rest(release):
    utterances, dropped = iemocap.load_with_summary(release)
    emotions = collections.Counter(u.labels["emotion"] for u in utterances)
    assert emotions == {"anger": 5, "happiness": 8, "neutral": 6, "sadness": 3}
    assert dropped == {"fru": 2, "xxx": 1, "sur": 1, "dis": 1, "fea": 1, "oth": 1}
    assert len(utterances) + sum(dropped.values()) == sum(RAW_COUNTS.values())
    assert [u.uid for u in utterances] == sorted(u.uid for u in utterances)
    by_uid = {u.uid: u for u in utterances}
    assert by_uid["Ses01F_script01_1_M000"].labels["emotion"] == "happiness"  # exc


def test_paper4_drops_and_counts_excitement(release):
    utterances, dropped = iemocap.load_with_summary(release, classes="paper4")
    emotions = collections.Counter(u.labels["emotion"] for u in utterances)
    assert emotions == {"anger": 5, "happiness": 4, "neutral": 6, "sadness": 3}
    assert dropped["exc"] == 4
    assert sum(dropped.values()) == sum(RAW_COUNTS.values()) - 18
    assert all(not u.uid.endswith("script01_1_M000") for u in utterances)


def test_custom_map(release):
    spec = "ang:anger, hap:happiness,exc:excitement,fru:frustration,neu:neutral"
    utterances, dropped = iemocap.load_with_summary(release, classes=spec)
    emotions = collections.Counter(u.labels["emotion"] for u in utterances)
    assert emotions == {
        "anger": 5,
        "happiness": 4,
        "excitement": 4,
        "frustration": 2,
        "neutral": 6,
    }
    assert dropped == {"sad": 3, "xxx": 1, "sur": 1, "dis": 1, "fea": 1, "oth": 1}
    assert iemocap.parse_classes(spec)["fru"] == "frustration"


def test_speaker_and_gender_come_from_the_last_field(release):
    utterances = iemocap.load(
        release, classes=",".join(f"{raw}:{raw}" for raw in iemocap.RAW_LABELS)
    )
    assert len(utterances) == sum(RAW_COUNTS.values())
    by_uid = {u.uid: u for u in utterances}
    # Dialogs whose SesNN letter (the marker wearer) is not the speaker's.
    for uid in (
        "Ses03M_impro05a_F000",
        "Ses03M_impro05b_F001",
        "Ses03M_impro08a_F002",
        "Ses03M_impro08b_F003",
    ):
        assert by_uid[uid].speaker == "Ses03F"
        assert by_uid[uid].gender == by_uid[uid].labels["gender"] == "female"
    assert by_uid["Ses05M_script01_1b_F001"].speaker == "Ses05F"
    assert by_uid["Ses05M_script01_1b_M000"].speaker == "Ses05M"
    assert by_uid["Ses01F_impro01_M000"].gender == "male"
    for u in utterances:
        letter = u.uid[-4]
        assert u.speaker == u.uid[:5] + letter
        assert u.group == u.uid[:5]
        assert u.gender == {"F": "female", "M": "male"}[letter]
    assert {u.speaker for u in utterances} == {
        f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"
    }


def test_dimensional_labels_and_paths(release):
    by_uid = {u.uid: u for u in iemocap.load(release)}
    u = by_uid["Ses01F_impro01_M000"]
    assert (u.labels["valence"], u.labels["arousal"], u.labels["dominance"]) == (
        1.5,
        4.0,
        4.5,
    )
    assert u.path == os.path.join(
        release, "Session1", "sentences", "wav", "Ses01F_impro01", f"{u.uid}.wav"
    )
    for uid, _, v, a, d in _rows():
        if uid in by_uid:
            labels = by_uid[uid].labels
            assert (labels["valence"], labels["arousal"], labels["dominance"]) == (
                v,
                a,
                d,
            )
            assert all(
                isinstance(labels[k], float)
                for k in ("valence", "arousal", "dominance")
            )
            assert os.path.isfile(by_uid[uid].path)


def test_improvised_and_scripted_filters(release):
    both = iemocap.load(release)
    impro, impro_dropped = iemocap.load_with_summary(release, kind="improvised")
    script, script_dropped = iemocap.load_with_summary(release, kind="scripted")
    assert all("_impro" in u.uid for u in impro)
    assert all("_script" in u.uid for u in script)
    assert sorted(u.uid for u in impro + script) == [u.uid for u in both]
    assert impro_dropped == {"fru": 2, "xxx": 1, "fea": 1, "oth": 1}
    assert script_dropped == {"sur": 1, "dis": 1}
    assert len(impro) == 13 and len(script) == 9


def test_root_may_be_the_release_or_its_parent(release):
    from_parent = iemocap.load(os.path.dirname(release))
    assert from_parent == iemocap.load(release)


def test_group_folds_keep_speakers_apart(release):
    utterances = iemocap.load(release)
    speakers = {u.speaker for u in utterances}
    folds = splits.cv_folds(utterances, "group")
    assert [f.name for f in folds] == [f"Ses0{s}" for s in range(1, 6)]
    for fold in folds:
        val, test = set(fold.val_speakers), set(fold.test_speakers)
        assert test == {f"{fold.name}F", f"{fold.name}M"}
        assert not val & test and speakers - val - test
        sides = {}
        for u in utterances:
            side = "test" if u.speaker in test else "val" if u.speaker in val else "t"
            sides.setdefault(u.speaker, set()).add(side)
        assert all(len(s) == 1 for s in sides.values())
    for fold in splits.cv_folds(utterances, "group", within_group=True):
        assert fold.val_speakers == (f"{fold.name}F",)
        assert fold.test_speakers == (f"{fold.name}M",)
        # The Ses03M dialogs' female utterances stay with the female speaker.
        if fold.name == "Ses03":
            held = [u for u in utterances if u.speaker == "Ses03F"]
            assert {u.uid for u in held} == {
                "Ses03M_impro05a_F000",
                "Ses03M_impro05b_F000",
                "Ses03M_impro05b_F001",
                "Ses03M_impro08b_F003",
                "Ses03M_impro08a_F002",
            }


@pytest.mark.parametrize(
    "classes,message",
    [
        ("paper5", "choose one of"),
        ("ang-anger,hap:happiness", "'ang-anger' is not 'raw:name'"),
        ("ang:", "'ang:' is not 'raw:name'"),
        ("ang:anger,joy:happiness", "'joy' is not an IEMOCAP label"),
        ("ang:anger,ang:rage", "'ang' is mapped twice"),
        ("ang:anger:x", "is not 'raw:name'"),
    ],
)
def test_bad_class_map_names_the_option(release, classes, message):
    with pytest.raises(ConfigError, match="corpus.iemocap_classes") as e:
        iemocap.load(release, classes=classes)
    assert message in str(e.value)


def test_bad_kind_names_the_option(release):
    with pytest.raises(ConfigError, match="corpus.iemocap_kind='all'"):
        iemocap.load(release, kind="all")


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(CorpusError, match=re.escape(str(tmp_path))):
        iemocap.load(str(tmp_path))


def test_missing_session_names_the_folder(tmp_path):
    release, _ = _build(str(tmp_path), {s: TREE[s] for s in (1, 2, 3, 4)})
    label_dir = os.path.join(release, "Session5", "dialog", "EmoEvaluation")
    with pytest.raises(CorpusError, match=re.escape(label_dir)):
        iemocap.load(release)


def _edit_line(release, lines, uid, old, new):
    """Replaces old by new on uid's label line; returns "file:line"."""
    path, line_no = lines[uid].rsplit(":", 1)
    with open(path, newline="") as f:  # Keeps CRLF line ends as written.
        text = f.read().split("\n")
    assert old in text[int(line_no) - 1]
    text[int(line_no) - 1] = text[int(line_no) - 1].replace(old, new)
    with open(path, "w", newline="") as f:
        f.write("\n".join(text))
    return lines[uid]


@pytest.mark.parametrize(
    "uid,old,new,message",
    [
        # impro09 does not exist: the id fails the naming scheme.
        (
            "Ses02M_impro02_M000",
            "Ses02M_impro02_M000",
            "Ses02M_impro09_M000",
            "utterance id",
        ),
        (
            "Ses02M_impro02_M000",
            "Ses02M_impro02_M000",
            "Ses02M_impro02_X000",
            "utterance id",
        ),
        # A valid id in the wrong dialog's file.
        ("Ses02M_impro02_M000", "Ses02M_impro02_M000", "Ses02M_impro03_M000", "belong"),
        ("Ses02M_impro02_M000", "\t[3.0000, 2.0000, 3.0000]", "", "malformed"),
        ("Ses02M_impro02_M000", "[3.0000,", "[three,", "malformed"),
        ("Ses02M_impro02_M000", "\tneu\t", "\tjoy\t", "'joy' is not one of"),
        # A second label line for Ses02M_impro02_F000.
        ("Ses02M_impro02_M000", "impro02_M000", "impro02_F000", "also labelled"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path, uid, old, new, message):
    release, lines = _build(str(tmp_path))
    where = _edit_line(release, lines, uid, old, new)
    with pytest.raises(CorpusError, match=message) as e:
        iemocap.load(release)
    assert where in str(e.value)


def test_stray_line_names_file_and_line(tmp_path):
    release, lines = _build(str(tmp_path))
    path, line_no = lines["Ses04F_script03_2_M000"].rsplit(":", 1)
    where = f"{path}:{int(line_no) + 1}"
    _edit_line(release, lines, "Ses04F_script03_2_M000", "]\r", "]\r\nstray text\r")
    with pytest.raises(CorpusError, match="malformed label line 'stray text'") as e:
        iemocap.load(release)
    assert where in str(e.value)


def test_missing_wav_of_a_kept_utterance_is_an_error(tmp_path):
    release, lines = _build(str(tmp_path))
    dialog = os.path.join(release, "Session1", "sentences", "wav", "Ses01F_impro01")
    # A dropped (fru) utterance's audio is never read, so it may be missing.
    os.remove(os.path.join(dialog, "Ses01F_impro01_F001.wav"))
    assert len(iemocap.load(release)) == 22
    os.remove(os.path.join(dialog, "Ses01F_impro01_F000.wav"))
    with pytest.raises(CorpusError, match="Ses01F_impro01_F000.wav") as e:
        iemocap.load(release)
    assert lines["Ses01F_impro01_F000"] in str(e.value)
    shutil.rmtree(dialog)
    with pytest.raises(CorpusError, match="has no audio file"):
        iemocap.load(release)
