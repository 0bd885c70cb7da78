"""Speaker-independent splits: no speaker appears in two splits."""

import dataclasses
from typing import Sequence

from mtl_ser.data.corpora.base import Utterance
from mtl_ser.errors import ConfigError


def holdout_split(
    utterances: Sequence[Utterance],
    val_speakers: Sequence[str],
    test_speakers: Sequence[str],
) -> dict[str, list[Utterance]]:
    """Splits by speaker: named val and test speakers, everyone else trains.

    Args:
      utterances: the corpus.
      val_speakers: speaker ids held out for validation; none: no
        validation (an empty val split).
      test_speakers: speaker ids held out for testing.

    Returns:
      {"train": [...], "val": [...], "test": [...]}, each in corpus order.

    Raises:
      ConfigError: a speaker is in both held-out lists, or is not in the
        corpus, or the train or test split (or val, when named) would be empty.
    """
    val, test = set(val_speakers), set(test_speakers)
    if val & test:
        raise ConfigError(
            f"split: speakers {sorted(val & test)} are in both val and test"
        )
    present = {u.speaker for u in utterances}
    for field, wanted in (("val_speakers", val), ("test_speakers", test)):
        if wanted - present:
            raise ConfigError(
                f"split.{field}: speakers {sorted(wanted - present)} are not in the "
                f"corpus (it has {sorted(present)})"
            )
    splits = {
        "train": [u for u in utterances if u.speaker not in val | test],
        "val": [u for u in utterances if u.speaker in val],
        "test": [u for u in utterances if u.speaker in test],
    }
    for name, members in splits.items():
        if not members and (name != "val" or val):
            raise ConfigError(f"split: the {name} split is empty")
    return splits


def parse_speakers(text: str) -> tuple[str, ...]:
    """ "a,b" -> ("a", "b")."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


# split.protocol: one split ("holdout": named speakers; "corpus": the corpus's
# own, from each utterance's "split" label), or a cross-validation (the others).
SINGLE_SPLITS = ("holdout", "corpus")
PROTOCOLS = (*SINGLE_SPLITS, "speaker", "group", "kfold")


def corpus_split(utterances: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    """The corpus's own split: each utterance's "split" label (train/val/test).

    Raises:
      ConfigError: an utterance has no split label, a split is empty, or a
        speaker is in two splits (the split would not be speaker-independent).
    """
    parts = {"train": [], "val": [], "test": []}
    for u in utterances:
        name = u.labels.get("split")
        if name not in parts:
            raise ConfigError(
                f"split.protocol='corpus': utterance {u.uid} ({u.path}) has no "
                f"train/val/test split label (got {name!r})"
            )
        parts[name].append(u)
    for name, members in parts.items():
        if not members:
            raise ConfigError(f"split.protocol='corpus': the {name} split is empty")
    seen = {}
    for name, members in parts.items():
        for speaker in sorted({u.speaker for u in members}):
            if speaker in seen:
                raise ConfigError(
                    f"split.protocol='corpus': speaker {speaker} is in both the "
                    f"{seen[speaker]} and the {name} split; the corpus's split is "
                    "not speaker-independent (use 'speaker' or 'kfold')"
                )
            seen[speaker] = name
    return parts


@dataclasses.dataclass(frozen=True)
class Fold:
    """One cross-validation fold: held-out speakers; everyone else trains."""

    name: str
    val_speakers: tuple[str, ...]
    test_speakers: tuple[str, ...]


def cv_folds(
    utterances: Sequence[Utterance],
    protocol: str,
    *,
    num_folds: int = 5,
    within_group: bool = False,
    validation: bool = True,
) -> list[Fold]:
    """The folds of a speaker-independent cross-validation.

    - "speaker": leave one speaker out. Fold i tests speaker i (sorted ids) and
      validates on the next one.
    - "group": leave one group out (`Utterance.group`, e.g. IEMOCAP sessions).
      Fold i tests group i and validates on the next group; with
      `within_group`, it validates on the held-out group's first speaker and
      tests on its others (IEMOCAP's one-session protocol).
    - "kfold": speaker-grouped k-fold. Speakers (sorted) are dealt round-robin
      into `num_folds` groups; fold i tests group i, validates on the next.

    Without `validation`, no fold has validation speakers: the ones above
    train too (within_group: the held-out group's speakers all test).

    Every fold leaves at least one training speaker, and no speaker is on two
    sides of a fold (asserted).

    Raises:
      ConfigError: naming the field, when the corpus has too few speakers or
        groups for the protocol.
    """
    speakers = sorted({u.speaker for u in utterances})
    groups = _held_out_groups(utterances, speakers, protocol, num_folds, within_group)
    folds = []
    for i, (name, members) in enumerate(groups):
        if protocol == "group" and within_group:
            if len(members) < 2:
                raise ConfigError(
                    f"split.within_group: group {name!r} has one speaker; "
                    "validation and test need one each"
                )
            val, test = members[:1], members[1:]
        else:
            val, test = groups[(i + 1) % len(groups)][1], members
        if not validation:
            val, test = (), members
        folds.append(Fold(name, tuple(val), tuple(test)))
    for fold in folds:
        held_out = set(fold.val_speakers) | set(fold.test_speakers)
        assert not set(fold.val_speakers) & set(fold.test_speakers), fold
        assert set(speakers) - held_out, fold  # Someone trains.
    return folds


def _held_out_groups(utterances, speakers, protocol, num_folds, within_group):
    """[(fold name, its speakers)]: what each fold of `protocol` holds out."""
    if protocol == "speaker":
        _need(len(speakers) >= 3, "split.protocol='speaker'", len(speakers), 3)
        return [(s, (s,)) for s in speakers]
    if protocol == "kfold":
        _need(
            len(speakers) >= num_folds,
            f"split.folds={num_folds}",
            len(speakers),
            num_folds,
        )
        if num_folds < 3:
            raise ConfigError(f"split.folds={num_folds}: must be >= 3")
        return [(f"fold{i}", tuple(speakers[i::num_folds])) for i in range(num_folds)]
    if protocol != "group":
        raise ConfigError(
            f"split.protocol={protocol!r}: cross-validation needs one of "
            f"{PROTOCOLS[len(SINGLE_SPLITS) :]}"
        )
    by_group = {}
    for u in utterances:
        by_group.setdefault(u.group, set()).add(u.speaker)
    if "" in by_group:
        raise ConfigError(
            "split.protocol='group': this corpus has utterances without a "
            "group; use 'speaker' or 'kfold'"
        )
    groups = [(g, tuple(sorted(by_group[g]))) for g in sorted(by_group)]
    need = 2 if within_group else 3
    _need(
        len(groups) >= need, "split.protocol='group'", len(groups), need, unit="groups"
    )
    return groups


def _need(ok: bool, field: str, have: int, need: int, unit: str = "speakers"):
    if not ok:
        raise ConfigError(
            f"{field}: the corpus has {have} {unit}, the protocol needs at least {need}"
        )
