"""Speaker-independent splits: no speaker appears in two splits."""

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
      val_speakers: speaker ids held out for validation.
      test_speakers: speaker ids held out for testing.

    Returns:
      {"train": [...], "val": [...], "test": [...]}, each in corpus order.

    Raises:
      ConfigError: a speaker is in both held-out lists, or is not in the
        corpus, or a split would be empty.
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
        if not members:
            raise ConfigError(f"split: the {name} split is empty")
    return splits


def parse_speakers(text: str) -> tuple[str, ...]:
    """ "a,b" -> ("a", "b")."""
    return tuple(s.strip() for s in text.split(",") if s.strip())
