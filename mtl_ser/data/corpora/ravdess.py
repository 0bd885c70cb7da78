"""RAVDESS audio-only release: `Actor_XX/03-01-EE-II-SS-RR-AA.wav`, 48 kHz.

The seven two-digit fields are modality (01 full AV, 02 video only, 03 audio
only), vocal channel (01 speech, 02 song), emotion (01..08), intensity (01
normal, 02 strong; neutral has no strong), statement (01/02), repetition
(01/02) and actor (01..24; odd actors are male). The speech and song archives
both unpack into `Actor_XX/` folders, so one root may hold both; song is left
out unless asked for, and the files left out are counted.

A few files of the original release are stereo: `audio.load_audio` downmixes
them, so nothing here decodes audio.
"""

import collections
import os
import re
from typing import Optional

from mtl_ser.data.corpora.base import CorpusError, Utterance

# Plain-English names shared with the other corpora, so that one class list
# (e.g. anger,happiness,neutral,sadness) means the same everywhere.
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
INTENSITIES = {"01": "normal", "02": "strong"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
SONG_DROPPED = "song (vocal channel 02)"  # The `dropped` key for skipped song files.

_ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")
_NAME = re.compile(r"^(\d\d)-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)\.wav$")
_FORMAT = "MM-VV-EE-II-SS-RR-AA.wav"


def load(
    root: str,
    *,
    include_song: bool = False,
    dropped: Optional[collections.Counter] = None,
) -> list[Utterance]:
    """Reads RAVDESS from its original layout.

    Args:
      root: the folder holding `Actor_01/` ... `Actor_24/`.
      include_song: also read the song files (vocal channel 02).
      dropped: if given, counts the files left out, by reason (`SONG_DROPPED`).

    Returns:
      One Utterance per audio-only wav file, sorted by uid; speaker = the actor's
      two digits ("01"), group = "", labels {"emotion", "gender", "intensity"
      ("normal"/"strong"), "vocal_channel" ("speech"/"song")}.

    Raises:
      CorpusError: naming the path, when root has no `Actor_XX/` folder, a wav
        name does not follow the naming scheme (or is a video modality, or
        names another actor than its folder), or no utterance is left.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise CorpusError(f"{root}: RAVDESS folder not found")
    actor_dirs = sorted(n for n in os.listdir(root) if _ACTOR_DIR.match(n))
    if not actor_dirs:
        raise CorpusError(
            f"{root}: no RAVDESS actor folders (expected root/Actor_01/ ...)"
        )
    counts = collections.Counter()
    utterances = []
    for actor_dir in actor_dirs:
        folder = os.path.join(root, actor_dir)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".wav"):
                continue  # E.g. the video release's .mp4 files.
            path = os.path.join(folder, name)
            utterance = _parse(path, name, actor_dir[len("Actor_") :])
            if utterance.labels["vocal_channel"] == "song" and not include_song:
                counts[SONG_DROPPED] += 1
                continue
            utterances.append(utterance)
    if dropped is not None:
        dropped.update(counts)
    if not utterances:
        raise CorpusError(
            f"{root}: no RAVDESS audio-only files (Actor_XX/{_FORMAT}); "
            f"{sum(counts.values())} left out ({dict(counts)})"
        )
    return sorted(utterances, key=lambda u: u.uid)


def _parse(path: str, name: str, folder_actor: str) -> Utterance:
    """One file name -> Utterance, or CorpusError naming the file."""
    match = _NAME.match(name)
    if not match:
        raise CorpusError(f"{path}: not a RAVDESS name ({_FORMAT})")
    modality, channel, emotion, intensity, _, _, actor = match.groups()
    if modality != "03":
        raise CorpusError(
            f"{path}: modality {modality} is a video file; the audio-only "
            "release names start with 03"
        )
    if actor != folder_actor:
        raise CorpusError(
            f"{path}: the name says actor {actor} but the file is in "
            f"Actor_{folder_actor}/"
        )
    if emotion == "01" and intensity == "02":
        raise CorpusError(f"{path}: neutral has no strong intensity (02)")
    gender = "male" if int(actor) % 2 == 1 else "female"
    return Utterance(
        uid=name[: -len(".wav")],
        path=path,
        speaker=actor,
        group="",
        gender=gender,
        labels={
            "emotion": EMOTIONS[emotion],
            "gender": gender,
            "intensity": INTENSITIES[intensity],
            "vocal_channel": VOCAL_CHANNELS[channel],
        },
    )
