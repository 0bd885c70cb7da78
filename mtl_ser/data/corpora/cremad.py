"""CREMA-D: `AudioWAV/AAAA_SSS_EEE_LL.wav` and `VideoDemographics.csv`, 16 kHz.

AAAA actor (1001..1091), SSS sentence (12 codes), EEE emotion (6 codes), LL
emotion level (LO, MD, HI, or XX: unspecified). An actor's sex is read from
`VideoDemographics.csv` ("ActorID","Age","Sex","Race","Ethnicity"), which sits
beside `AudioWAV/` in the release.
"""

import csv
import os
import re

from mtl_ser.data.corpora.base import CorpusError, Utterance

EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = frozenset(
    {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
)
DEMOGRAPHICS = "VideoDemographics.csv"
_SEXES = {"Male": "male", "Female": "female"}
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)\.wav$")
_FORMAT = "AAAA_SSS_EEE_LL.wav"


def load(root: str) -> list[Utterance]:
    """Reads CREMA-D from its original layout.

    Args:
      root: the folder holding `AudioWAV/` and `VideoDemographics.csv`.

    Returns:
      One Utterance per wav file, sorted by uid; speaker = the actor id
      ("1001"), group = "", labels {"emotion", "gender", "intensity" ("low",
      "medium", "high", "unspecified")}.

    Raises:
      CorpusError: naming the path, when `AudioWAV/` or the demographics file
        is missing or malformed (file and line), a wav name does not follow the
        naming scheme, an actor is not in the demographics file, or there is no
        wav file.
    """
    root = os.path.abspath(root)
    wav_dir = os.path.join(root, "AudioWAV")
    if not os.path.isdir(wav_dir):
        raise CorpusError(
            f"{wav_dir}: CREMA-D folder not found (expected root/AudioWAV/)"
        )
    csv_path = os.path.join(root, DEMOGRAPHICS)
    genders = read_genders(csv_path)
    utterances = []
    for name in sorted(os.listdir(wav_dir)):
        if not name.endswith(".wav"):
            continue
        path = os.path.join(wav_dir, name)
        match = _NAME.match(name)
        if not match:
            raise CorpusError(f"{path}: not a CREMA-D name ({_FORMAT})")
        actor, sentence, emotion, level = match.groups()
        if sentence not in SENTENCES:
            raise CorpusError(
                f"{path}: unknown sentence code {sentence!r} "
                f"(one of {sorted(SENTENCES)})"
            )
        if actor not in genders:
            raise CorpusError(f"{path}: actor {actor} is not in {csv_path}")
        utterances.append(
            Utterance(
                uid=name[: -len(".wav")],
                path=path,
                speaker=actor,
                group="",
                gender=genders[actor],
                labels={
                    "emotion": EMOTIONS[emotion],
                    "gender": genders[actor],
                    "intensity": LEVELS[level],
                },
            )
        )
    if not utterances:
        raise CorpusError(f"{wav_dir}: no CREMA-D wav files ({_FORMAT})")
    return utterances


def read_genders(csv_path: str) -> dict[str, str]:
    """Reads `VideoDemographics.csv`: actor id -> "female"/"male".

    Raises:
      CorpusError: naming the file (and line), when it is missing, lacks the
        ActorID or Sex column, repeats an actor, or has another Sex value.
    """
    if not os.path.isfile(csv_path):
        raise CorpusError(
            f"{csv_path}: CREMA-D demographics file not found (it gives each "
            "actor's sex)"
        )
    genders = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"ActorID", "Sex"} - set(reader.fieldnames or ())
        if missing:
            raise CorpusError(
                f"{csv_path}:1: no {sorted(missing)} column in the header "
                f"{reader.fieldnames}"
            )
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            actor, sex = (row["ActorID"] or "").strip(), (row["Sex"] or "").strip()
            if not re.fullmatch(r"\d{4}", actor):
                raise CorpusError(f"{where}: ActorID {actor!r} is not 4 digits")
            if sex not in _SEXES:
                raise CorpusError(f"{where}: Sex {sex!r} is not one of {list(_SEXES)}")
            if actor in genders:
                raise CorpusError(f"{where}: actor {actor} is listed twice")
            genders[actor] = _SEXES[sex]
    return genders
