"""A built-in synthetic corpus of speech-like emotional utterances.

Each utterance comes from the source-filter voice synthesiser of
`mtl_ser/data/voice` (speakers differ in vocal-tract length, base F0 and voice
quality; emotions are rendered as prosody). The corpus is written as 16-bit PCM
wav files plus a manifest CSV, so the real loading path (decode, resample,
features) is exercised; it is bitwise reproducible per seed.
"""

import csv
import json
import os

import soundfile

from mtl_ser.data.corpora.base import CorpusError, Utterance
from mtl_ser.data.voice import speakers, synth

EMOTIONS = speakers.EMOTIONS

MANIFEST_NAME = "manifest.csv"
PARAMS_NAME = "params.json"
WAV_DIR = "wav"
MANIFEST_COLUMNS = (
    "uid",
    "path",
    "speaker",
    "gender",
    "emotion",
    "arousal",
    "valence",
    "dominance",
    "intensity",
)


def _check_arguments(num_speakers, utterances_per_speaker, seed, sample_rate):
    """Raises ValueError naming the first invalid generation argument."""
    if not isinstance(num_speakers, int) or num_speakers < 2 or num_speakers % 2:
        raise ValueError(f"num_speakers must be an even int >= 2, got {num_speakers!r}")
    per = utterances_per_speaker
    if not isinstance(per, int) or per < len(EMOTIONS) or per % len(EMOTIONS):
        raise ValueError(
            f"utterances_per_speaker must be a positive multiple of "
            f"{len(EMOTIONS)}, got {per!r}"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(sample_rate, int) or sample_rate < 8000:
        raise ValueError(f"sample_rate must be an int >= 8000, got {sample_rate!r}")


def _read_params(path):
    """Returns the parameters stored at `path`, or None if unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _manifest_row(root, seed, speaker_index, utterance_index, sample_rate):
    """Synthesises and writes one wav; returns its manifest row."""
    speaker = speakers.speaker_name(speaker_index)
    uid = f"{speaker}_{utterance_index:03d}"
    audio, info = synth.synthesize(seed, speaker_index, utterance_index, sample_rate)
    relative = os.path.join(WAV_DIR, f"{uid}.wav")
    soundfile.write(
        os.path.join(root, relative),
        synth.to_pcm16(audio),
        sample_rate,
        subtype="PCM_16",
    )
    row = dict(uid=uid, path=relative, speaker=speaker)
    row["gender"] = speakers.speaker_gender(speaker_index)
    row["emotion"] = info["emotion"]
    for name in ("arousal", "valence", "dominance", "intensity"):
        row[name] = f"{info[name]:.4f}"
    return row


def generate(
    root, *, num_speakers=10, utterances_per_speaker=64, seed=0, sample_rate=16000
):
    """Writes the synthetic corpus under `root` unless it is already there.

    Args:
      root: output directory; receives wav/<uid>.wav, params.json and
        manifest.csv (written last, atomically, so its presence marks a
        complete corpus).
      num_speakers: even number of speakers, >= 2; half are female.
      utterances_per_speaker: positive multiple of 4; emotions are balanced.
      seed: non-negative int; the corpus is bitwise reproducible per seed.
      sample_rate: sample rate of the wav files in Hz.

    Returns:
      The path of the manifest CSV.

    Raises:
      ValueError: an argument is invalid; the message names it.
    """
    _check_arguments(num_speakers, utterances_per_speaker, seed, sample_rate)
    params = dict(
        version=synth.GENERATOR_VERSION,
        num_speakers=num_speakers,
        utterances_per_speaker=utterances_per_speaker,
        seed=seed,
        sample_rate=sample_rate,
    )
    manifest = os.path.join(root, MANIFEST_NAME)
    params_path = os.path.join(root, PARAMS_NAME)
    if os.path.isfile(manifest) and _read_params(params_path) == params:
        return manifest
    # A stale manifest must go first: it would vouch for half-rewritten wavs.
    if os.path.exists(manifest):
        os.remove(manifest)
    os.makedirs(os.path.join(root, WAV_DIR), exist_ok=True)
    with open(params_path, "w") as f:
        json.dump(params, f, indent=2, sort_keys=True)
    rows = [
        _manifest_row(root, seed, s, u, sample_rate)
        for s in range(num_speakers)
        for u in range(utterances_per_speaker)
    ]
    temporary = manifest + ".tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, manifest)
    return manifest


def _utterance_from_row(root, row, manifest):
    """Builds an Utterance from a manifest row, checking its wav exists."""
    try:
        labels = {
            "emotion": row["emotion"],
            "gender": row["gender"],
            "arousal": float(row["arousal"]),
            "valence": float(row["valence"]),
            "dominance": float(row["dominance"]),
        }
        uid, relative, speaker = row["uid"], row["path"], row["speaker"]
    except (KeyError, TypeError, ValueError) as e:
        raise CorpusError(f"malformed row in {manifest}: {row!r} ({e})") from e
    path = os.path.join(root, relative)
    if not os.path.isfile(path):
        raise CorpusError(f"{manifest} lists {path}, which does not exist")
    return Utterance(
        uid=uid,
        path=path,
        speaker=speaker,
        group="",
        gender=row["gender"],
        labels=labels,
    )


def load(root):
    """Reads a generated synthetic corpus.

    Args:
      root: directory previously passed to `generate`.

    Returns:
      A list of Utterance records in manifest order, with absolute paths and
      labels {"emotion", "gender", "arousal", "valence", "dominance"}.

    Raises:
      CorpusError: the directory, the manifest or a listed wav is missing, or
        the manifest is malformed; the message names the path.
    """
    root = os.path.abspath(root)
    manifest = os.path.join(root, MANIFEST_NAME)
    hint = (
        "create it with mtl_ser.data.corpora.synthetic.generate("
        f"{root!r}) (the synthetic corpus is generated locally, no download)"
    )
    if not os.path.isdir(root):
        raise CorpusError(f"synthetic corpus directory {root} does not exist; {hint}")
    if not os.path.isfile(manifest):
        raise CorpusError(f"synthetic corpus manifest {manifest} is missing; {hint}")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise CorpusError(f"{manifest} lacks columns {sorted(missing)}")
        return [_utterance_from_row(root, row, manifest) for row in reader]
