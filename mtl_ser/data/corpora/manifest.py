"""Any other corpus, described by a manifest: a CSV or JSONL table of utterances.

One row (CSV) or one JSON object per line (JSONL) per utterance. Column names are
case-insensitive:

  path      audio file; a relative path is relative to the manifest's folder.
  emotion   emotion name, plain English (stored lower-case).
  speaker   speaker id, unique within the corpus.
  uid / id  optional utterance id; default: the path relative to the manifest's
            folder, without its extension.
  gender    optional: f/female or m/male, any case; empty: unknown.
  session   optional: -> Utterance.group (used by split.protocol='group').
  arousal, valence, dominance: optional floats; empty, null or NaN: absent.
  split     optional: train, val or test; kept as labels["split"].

Other columns are ignored (e.g. the synthetic corpus's `intensity`), so the
synthetic corpus's `manifest.csv` reads the same here as with `synthetic.load`.
Audio is not decoded; each listed file must exist.
"""

import csv
import json
import math
import os

from mtl_ser.data.corpora.base import CorpusError, Utterance

REQUIRED = ("path", "emotion", "speaker")
DIMENSIONS = ("arousal", "valence", "dominance")
SPLITS = ("train", "val", "test")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
_GENDERS = {"f": "female", "female": "female", "m": "male", "male": "male", "": ""}


def load(path_or_root: str) -> list[Utterance]:
    """Reads the utterances a manifest lists.

    Args:
      path_or_root: a `.csv` or `.jsonl` manifest, or a folder holding exactly
        one of `manifest.csv` and `manifest.jsonl`.

    Returns:
      One Utterance per row, in manifest order, with absolute paths; labels
      hold "emotion", and where given "gender", "arousal", "valence",
      "dominance" and "split".

    Raises:
      CorpusError: the manifest is missing, empty or malformed (a missing
        column, a bad number, gender or split value, a duplicate uid, a listed
        file that does not exist); the message names the file and line.
    """
    manifest = _find_manifest(path_or_root)
    if manifest.endswith(".jsonl"):
        rows = _read_jsonl(manifest)
    else:
        rows = _read_csv(manifest)
    folder = os.path.dirname(manifest)
    utterances, lines = [], {}
    for line, row in rows:
        where = f"{manifest}, line {line}"
        utterance = _utterance(row, folder, where)
        if utterance.uid in lines:
            raise CorpusError(
                f"{where}: uid {utterance.uid!r} is already used on line "
                f"{lines[utterance.uid]}"
            )
        lines[utterance.uid] = line
        utterances.append(utterance)
    return utterances


def _find_manifest(path_or_root):
    """Returns the absolute path of the manifest file to read."""
    path = os.path.abspath(path_or_root)
    if os.path.isdir(path):
        found = [os.path.join(path, name) for name in MANIFEST_NAMES]
        found = [f for f in found if os.path.isfile(f)]
        if len(found) != 1:
            problem = "holds both" if found else "holds neither of"
            raise CorpusError(
                f"{path}: the folder {problem} manifest.csv and manifest.jsonl; "
                "set corpus.root to the manifest file"
            )
        return found[0]
    if not os.path.isfile(path):
        raise CorpusError(
            f"{path}: manifest not found (expected a .csv or .jsonl file, or a "
            "folder holding manifest.csv or manifest.jsonl)"
        )
    if not path.lower().endswith((".csv", ".jsonl")):
        raise CorpusError(f"{path}: a manifest must be a .csv or .jsonl file")
    return path


def _check_columns(columns, where):
    """Raises if a required column is missing."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise CorpusError(
            f"{where}: missing column(s) {missing}; a manifest needs {list(REQUIRED)}"
        )


def _read_csv(manifest):
    """Returns [(line number, {column: text})] for the data rows of a CSV."""
    rows = []
    # utf-8-sig drops the byte-order mark spreadsheet programs write.
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise CorpusError(f"{manifest}: empty file (expected a header line)")
            columns = [c.strip().lower() for c in header]
            named = [c for c in columns if c]
            if len(set(named)) != len(named):
                raise CorpusError(f"{manifest}, line 1: a column is named twice")
            _check_columns(columns, f"{manifest}, line 1")
            line = reader.line_num + 1
            for fields in reader:
                # A quoted field may span lines: the record starts at `line`.
                start, line = line, reader.line_num + 1
                if not any(field.strip() for field in fields):
                    continue
                if len(fields) != len(columns):
                    raise CorpusError(
                        f"{manifest}, line {start}: {len(fields)} fields, the "
                        f"header has {len(columns)}"
                    )
                rows.append((start, dict(zip(columns, fields, strict=True))))
        except csv.Error as e:
            raise CorpusError(f"{manifest}, line {reader.line_num}: {e}") from e
        except UnicodeDecodeError as e:
            raise CorpusError(f"{manifest}: not UTF-8 text ({e})") from e
    if not rows:
        raise CorpusError(f"{manifest}: empty file (a header but no rows)")
    return rows


def json_objects(f, name: str, error=CorpusError):
    """Yields (line number, {lower-case key: value}) of each JSON object line.

    Blank lines are skipped; a line that is not a JSON object raises `error`
    naming `name` and the line. Prediction reads its input lists with it too.
    """
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as e:
            raise error(f"{name}, line {line}: not JSON ({e})") from e
        if not isinstance(record, dict):
            raise error(f"{name}, line {line}: expected a JSON object")
        yield line, {str(k).strip().lower(): v for k, v in record.items()}


def _read_jsonl(manifest):
    """Returns [(line number, {key: value})] for the JSON objects of a JSONL."""
    rows = []
    with open(manifest, encoding="utf-8-sig") as f:
        try:
            for line, row in json_objects(f, manifest):
                _check_columns(row, f"{manifest}, line {line}")
                rows.append((line, row))
        except UnicodeDecodeError as e:
            raise CorpusError(f"{manifest}: not UTF-8 text ({e})") from e
    if not rows:
        raise CorpusError(f"{manifest}: empty file (no JSON objects)")
    return rows


def _text(row, name, where):
    """The stripped text in column `name` ("" when absent); JSON ints allowed."""
    value = row.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(f"{where}: {name}={value!r} is not text")
    return str(value).strip()


def _number(row, name, where):
    """The float in column `name`, or None when empty, null or NaN."""
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise CorpusError(f"{where}: {name}={value!r} is not a number") from None
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise CorpusError(f"{where}: {name}={value!r} is not finite")
    return number


def _utterance(row, folder, where):
    """Builds the Utterance of one manifest row."""
    relative = _text(row, "path", where)
    speaker = _text(row, "speaker", where)
    emotion = _text(row, "emotion", where).lower()
    for name, value in (("path", relative), ("speaker", speaker), ("emotion", emotion)):
        if not value:
            raise CorpusError(f"{where}: {name} is empty")
    path = os.path.normpath(os.path.join(folder, relative))
    if not os.path.isfile(path):
        raise CorpusError(f"{where}: audio file {path} does not exist")
    gender = _text(row, "gender", where).lower()
    if gender not in _GENDERS:
        raise CorpusError(
            f"{where}: gender={gender!r}; expected f, female, m, male or empty"
        )
    gender = _GENDERS[gender]
    labels = {"emotion": emotion}
    if gender:
        labels["gender"] = gender
    for name in DIMENSIONS:
        value = _number(row, name, where)
        if value is not None:
            labels[name] = value
    split = _text(row, "split", where).lower()
    if split and split not in SPLITS:
        raise CorpusError(f"{where}: split={split!r}; expected one of {SPLITS}")
    if split:
        labels["split"] = split
    uid = _text(row, "uid", where) or _text(row, "id", where) or _path_uid(path, folder)
    return Utterance(
        uid=uid,
        path=path,
        speaker=speaker,
        group=_text(row, "session", where),
        gender=gender,
        labels=labels,
    )


def _path_uid(path, folder):
    """The path relative to `folder` (absolute if outside it), sans extension."""
    relative = os.path.relpath(path, folder)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        relative = path
    return os.path.splitext(relative)[0].replace(os.sep, "/")
