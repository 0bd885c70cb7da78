"""What prediction reads and writes: the audio files that wav files, folders
and manifests name (with their speakers), and the prediction tables.

`outputs/predict.py`'s Predictor predicts the files; `--mode=predict` collects
them here first and writes the tables here last.
"""

import csv
import io
import json
import os
from typing import Sequence

from mtl_ser import tasks as tasks_lib
from mtl_ser.data.corpora import manifest

MANIFEST_EXTENSIONS = (".csv", ".jsonl")
# What a folder's audio files end with (any case): what the decoder reads
# (audio.load_audio: libsndfile, which reads MP3 and Opus too).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


class InputError(ValueError):
    """An input list cannot be read (e.g. a manifest without a path column)."""


SPEAKER_SOURCES = ("manifest", "folder")


def collect_inputs(inputs: Sequence[str]) -> tuple[list, list]:
    """The audio files that wav files, folders and manifests name: `collect`'s
    (paths, skipped)."""
    paths, _, skipped = collect(inputs)
    return paths, skipped


def collect(inputs: Sequence[str], speakers: str = "manifest") -> tuple:
    """The audio files that wav files, folders and manifests name, and their
    speakers.

    Args:
      inputs: each an audio file, a folder (its audio files, recursively, in
        sorted order) or a .csv/.jsonl manifest with a `path` column (see
        `read_manifest`).
      speakers: where a file's speaker comes from (runs normalised per speaker
        use it): "manifest", a manifest's `speaker` column (None for the files
        of folders, files named alone, and blank cells); "folder", the folder
        that holds the file (all files of one folder are one speaker).

    Returns:
      (paths, speakers, skipped): the files, in input order; the speaker of
      each (a string or None); (folder, reason) of each folder holding no
      audio file (AUDIO_EXTENSIONS, any case). A file a manifest lists that is
      missing or unreadable is kept: predict_files skips it with its reason.

    Raises:
      InputError: a named file or folder does not exist, or a manifest is
        missing or malformed; the message names it.
      ValueError: `speakers` is not one of SPEAKER_SOURCES.
    """
    if speakers not in SPEAKER_SOURCES:
        raise ValueError(f"speakers={speakers!r}: choose one of {SPEAKER_SOURCES}")
    listed, skipped = [], []  # (path, manifest speaker or None)
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            found = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(item)
                for name in names
                if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            if not found:
                kinds = ", ".join(AUDIO_EXTENSIONS)
                skipped.append((item, f"folder holds no audio file ({kinds})"))
            listed.extend((path, None) for path in found)
        elif item.lower().endswith(MANIFEST_EXTENSIONS):
            listed.extend(read_manifest_rows(item))
        elif not os.path.exists(item):
            raise InputError(f"{item}: no such file or folder")
        else:
            listed.append((item, None))
    paths = [path for path, _ in listed]
    if speakers == "folder":
        return paths, [os.path.dirname(os.path.abspath(p)) for p in paths], skipped
    return paths, [speaker for _, speaker in listed], skipped


def read_manifest(path: str) -> list[str]:
    """The audio paths a .csv or .jsonl manifest lists, in its order
    (`read_manifest_rows`)."""
    return [p for p, _ in read_manifest_rows(path)]


def read_manifest_rows(path: str) -> list[tuple]:
    """(audio path, speaker or None) of each row of a .csv or .jsonl manifest.

    Only the `path` and `speaker` columns (any case) are read, so a training
    manifest serves (corpora.manifest); relative paths are relative to the
    manifest's folder. A missing or blank speaker is None.

    Raises:
      InputError: the manifest is missing, has no `path` column, an empty path
        or no rows; the message names the file and line.
    """
    if not os.path.isfile(path):
        raise InputError(f"{path}: manifest not found")
    folder = os.path.dirname(os.path.abspath(path))
    read = _csv_rows if path.lower().endswith(".csv") else _jsonl_rows
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            listed = read(f, path)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from e
    out = []
    for line, value, speaker in listed:
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{path}, line {line}: path={value!r} is not a path")
        speaker = str(speaker).strip() if speaker is not None else ""
        out.append(
            (os.path.normpath(os.path.join(folder, value.strip())), speaker or None)
        )
    if not out:
        raise InputError(f"{path}: no rows")
    return out


def _csv_rows(f, path: str) -> list[tuple]:
    """(line, path column, speaker column or None) of each non-blank row of a
    CSV with a header."""
    reader = csv.reader(f)
    try:
        header = [c.strip().lower() for c in next(reader, [])]
        if "path" not in header:
            raise InputError(f"{path}, line 1: no `path` column in {header}")
        column, listed = header.index("path"), []
        speaker = header.index("speaker") if "speaker" in header else None
        for fields in reader:
            if any(field.strip() for field in fields):
                value = fields[column] if column < len(fields) else ""
                who = (
                    fields[speaker]
                    if speaker is not None and speaker < len(fields)
                    else None
                )
                listed.append((reader.line_num, value, who))
    except csv.Error as e:
        raise InputError(f"{path}, line {reader.line_num}: {e}") from e
    return listed


def _jsonl_rows(f, path: str) -> list[tuple]:
    """(line, "path" value, "speaker" value or None) of each JSON object of a
    JSONL file."""
    return [
        (line, row.get("path"), row.get("speaker"))
        for line, row in manifest.json_objects(f, path, error=InputError)
    ]


def table(rows: Sequence[dict], tasks) -> tuple[list, list]:
    """predict_files' rows as (header, records) of the predictions CSV.

    Columns: path; per classification task its predicted class (named after
    the task) and the probability of each class (`<task>_p_<class>`); per
    regression task its value (named after the task); `statistics` (which
    statistics standardised the file's log-mels: "training split", "speaker
    <name> (<n> files)", "own utterance" or "none"); `warning` (empty, or why
    the prediction deserves less trust: Predictor.warning).
    """
    header = ["path"]
    for task in tasks:
        header.append(task.name)
        header.extend(f"{task.name}_p_{c}" for c in task.classes)
    records = []
    for row in rows:
        record = [row["path"]]
        for task in tasks:
            result = row[task.name]
            if task.kind == tasks_lib.CLASSIFICATION:
                record.append(result["class"])
                record.extend(result["probabilities"][c] for c in task.classes)
            else:
                record.append(result["value"])
        records.append([*record, row.get("statistics", ""), row.get("warning", "")])
    return [*header, "statistics", "warning"], records


def write_predictions(
    folder: str, predictor, rows: Sequence[dict], skipped: Sequence
) -> list[str]:
    """Writes predictions.csv, predictions.json and skipped.tsv into `folder`.

    Each file is written atomically; skipped.tsv (path, reason) only when a
    file was skipped (one left by an earlier prediction is removed). Call it
    from process 0 only.

    Returns:
      The paths written.
    """
    os.makedirs(folder, exist_ok=True)
    header, records = table(rows, predictor.tasks)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *records])
    written = [_write_text(os.path.join(folder, "predictions.csv"), text.getvalue())]
    kind, step = predictor.checkpoint
    summary = {
        "workdir": os.path.abspath(predictor.workdir),
        "checkpoint": {"kind": kind, "step": step},
        "predictions": list(rows),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }
    text = json.dumps(summary, indent=2) + "\n"
    written.append(_write_text(os.path.join(folder, "predictions.json"), text))
    tsv = os.path.join(folder, "skipped.tsv")
    if skipped:
        lines = ["path\treason"] + [
            "\t".join(" ".join(str(v).split()) for v in entry) for entry in skipped
        ]
        written.append(_write_text(tsv, "\n".join(lines) + "\n"))
    elif os.path.exists(tsv):
        os.remove(tsv)
    return written


def _write_text(path: str, text: str) -> str:
    """Writes `text` to `path` atomically (temporary file, then rename)."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path
