"""The Utterance record: what every corpus adapter returns.

Nothing outside `mtl_ser/data/corpora/` knows a corpus's file naming; the rest of
the package sees only these records.
"""

import dataclasses
from typing import Mapping, Union

Label = Union[str, float]


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus.

    Attributes:
        uid: unique utterance id within the corpus.
        path: absolute path of the audio file.
        speaker: speaker id (unique within the corpus).
        group: recording session or other grouping used by splits ("" if none).
        gender: "female", "male" or "" when unknown.
        labels: task label values keyed by label name, e.g. {"emotion": "anger",
          "arousal": 4.1}. Categorical labels are strings, dimensional ones floats.
    """

    uid: str
    path: str
    speaker: str
    group: str
    gender: str
    labels: Mapping[str, Label]


class CorpusError(ValueError):
    """A corpus on disk is missing or malformed; the message names the path."""
