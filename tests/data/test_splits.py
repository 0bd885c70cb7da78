"""Splits: holdout, the corpus's own split, and the folds of each CV protocol."""

import dataclasses

import pytest

from mtl_ser.data import corpora, splits
from mtl_ser.data.corpora.base import Utterance
from mtl_ser.errors import ConfigError


def _corpus(groups: dict) -> list[Utterance]:
    """Two utterances per speaker; groups maps group -> speakers."""
    return [
        Utterance(f"{s}_{i}", f"/{s}_{i}.wav", s, g, "", {"emotion": "neutral"})
        for g, speakers in groups.items()
        for s in speakers
        for i in range(2)
    ]


def _check_disjoint_and_complete(folds, speakers):
    tested = [s for f in folds for s in f.test_speakers]
    assert sorted(tested) == sorted(speakers)  # Each speaker tested exactly once.
    for f in folds:
        assert not set(f.val_speakers) & set(f.test_speakers)
        assert set(speakers) - set(f.val_speakers) - set(f.test_speakers)


def test_leave_one_speaker_out():
    speakers = [f"s{i}" for i in range(5)]
    folds = splits.cv_folds(_corpus({"": speakers}), "speaker")
    assert [f.test_speakers for f in folds] == [(s,) for s in speakers]
    assert [f.val_speakers for f in folds] == [(s,) for s in speakers[1:] + ["s0"]]
    _check_disjoint_and_complete(folds, speakers)


def test_folds_without_validation_train_on_every_other_speaker():
    speakers = [f"s{i}" for i in range(5)]
    corpus = _corpus({"": speakers})
    folds = splits.cv_folds(corpus, "speaker", validation=False)
    assert [f.test_speakers for f in folds] == [(s,) for s in speakers]
    assert all(f.val_speakers == () for f in folds)
    _check_disjoint_and_complete(folds, speakers)
    parts = splits.holdout_split(corpus, folds[0].val_speakers, folds[0].test_speakers)
    assert {u.speaker for u in parts["train"]} == set(speakers[1:])
    assert parts["val"] == []
    # Named validation speakers still may not leave an empty split.
    with pytest.raises(ConfigError, match="the train split is empty"):
        splits.holdout_split(corpus, speakers[1:], speakers[:1])


def test_speaker_grouped_kfold():
    speakers = [f"s{i}" for i in range(7)]
    folds = splits.cv_folds(_corpus({"": speakers}), "kfold", num_folds=3)
    assert [f.test_speakers for f in folds] == [
        ("s0", "s3", "s6"),
        ("s1", "s4"),
        ("s2", "s5"),
    ]
    _check_disjoint_and_complete(folds, speakers)


def test_leave_one_group_out_and_within_group():
    groups = {f"Ses0{i}": (f"Ses0{i}F", f"Ses0{i}M") for i in range(1, 6)}
    speakers = [s for g in groups.values() for s in g]
    folds = splits.cv_folds(_corpus(groups), "group")
    assert [f.name for f in folds] == sorted(groups)
    assert folds[0].test_speakers == ("Ses01F", "Ses01M")
    assert folds[0].val_speakers == ("Ses02F", "Ses02M")
    _check_disjoint_and_complete(folds, speakers)
    within = splits.cv_folds(_corpus(groups), "group", within_group=True)
    assert within[4].val_speakers == ("Ses05F",)
    assert within[4].test_speakers == ("Ses05M",)


@pytest.mark.parametrize(
    "protocol, kwargs, groups, message",
    [
        ("kfold", {"num_folds": 5}, {"": ("a", "b", "c")}, "split.folds=5: .* 3 spe"),
        ("speaker", {}, {"": ("a", "b")}, "split.protocol='speaker': .* 2 speakers"),
        ("group", {}, {"": ("a", "b", "c")}, "utterances without a group"),
        ("group", {}, {"g1": ("a",), "g2": ("b",)}, "2 groups"),
        ("group", {"within_group": True}, {"g1": ("a",), "g2": ("b",)}, "one spe"),
    ],
)
def test_too_few_speakers_or_groups_fail_naming_the_field(
    protocol, kwargs, groups, message
):
    with pytest.raises(ConfigError, match=message):
        splits.cv_folds(_corpus(groups), protocol, **kwargs)


def _with_splits(groups: dict, split_of: dict) -> list[Utterance]:
    return [
        Utterance(
            u.uid,
            u.path,
            u.speaker,
            u.group,
            u.gender,
            {**u.labels, "split": split_of[u.speaker]},
        )
        for u in _corpus(groups)
    ]


def test_the_corpus_split_is_read_and_must_be_speaker_independent():
    groups = {"": ("a", "b", "c", "d")}
    parts = splits.corpus_split(
        _with_splits(groups, {"a": "train", "b": "train", "c": "val", "d": "test"})
    )
    assert {k: sorted({u.speaker for u in v}) for k, v in parts.items()} == {
        "train": ["a", "b"],
        "val": ["c"],
        "test": ["d"],
    }
    mixed = _with_splits(groups, {"a": "train", "b": "train", "c": "val", "d": "test"})
    mixed[0] = dataclasses.replace(mixed[0], labels={"split": "test"})
    with pytest.raises(
        ConfigError, match="speaker a is in both the train and the test"
    ):
        splits.corpus_split(mixed)
    with pytest.raises(ConfigError, match=r"a_0 \(/a_0.wav\) has no .* split label"):
        splits.corpus_split(_corpus(groups))


def test_holdout_split_rejects_overlap_and_unknown_speakers(smoke_config):
    utts = corpora.load_corpus(smoke_config.corpus)
    with pytest.raises(ValueError, match="both val and test"):
        splits.holdout_split(utts, ["spk01"], ["spk01"])
    with pytest.raises(ValueError, match="split.test_speakers"):
        splits.holdout_split(utts, ["spk01"], ["nobody"])
