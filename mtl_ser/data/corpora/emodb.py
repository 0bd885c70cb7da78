"""EmoDB (Berlin Database of Emotional Speech): `wav/SSTTTEV.wav`.

SS speaker, TTT text, E emotion letter, V version. Gender is by speaker.
"""

import os
import re

from mtl_ser.data.corpora.base import CorpusError, Utterance

EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
MALE_SPEAKERS = frozenset({"03", "10", "11", "12", "15"})
_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])\.wav$")


def load(root: str) -> list[Utterance]:
    """Reads EmoDB from its original layout.

    Args:
      root: the folder holding `wav/`.

    Returns:
      One Utterance per wav file, sorted by uid; group = text id.
    """
    wav_dir = os.path.join(os.path.abspath(root), "wav")
    if not os.path.isdir(wav_dir):
        raise CorpusError(f"{wav_dir}: EmoDB folder not found (expected root/wav/)")
    utterances = []
    for name in sorted(os.listdir(wav_dir)):
        match = _NAME.match(name)
        if not match:
            if name.endswith(".wav"):
                raise CorpusError(f"{os.path.join(wav_dir, name)}: not an EmoDB name")
            continue
        speaker, text, emotion, _ = match.groups()
        gender = "male" if speaker in MALE_SPEAKERS else "female"
        utterances.append(
            Utterance(
                uid=name[:-4],
                path=os.path.join(wav_dir, name),
                speaker=speaker,
                group=text,
                gender=gender,
                labels={"emotion": EMOTIONS[emotion], "gender": gender},
            )
        )
    if not utterances:
        raise CorpusError(f"{wav_dir}: no EmoDB wav files (SSTTTEV.wav)")
    return utterances
