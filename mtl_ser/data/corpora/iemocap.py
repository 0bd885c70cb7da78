"""IEMOCAP (`IEMOCAP_full_release/Session1..5/`), read from the release layout.

Labels: `SessionN/dialog/EmoEvaluation/<dialog>.txt`, one line per utterance,
`[start - end]<TAB>utterance_id<TAB>label<TAB>[V, A, D]`, after a `%` header and
each followed by per-evaluator lines (`C-E1:`, `A-F1:`, ...) that are ignored.
Audio: `SessionN/sentences/wav/<dialog>/<utterance_id>.wav`.

The speaker is the session plus the gender letter of the id's *last* field
(`Ses03M_impro05a_F007` is speaker Ses03F, female). The letter after `SesNN`
names the actor wearing the motion-capture markers, not the speaker, so reading
the gender by character position mislabels dialogs such as `Ses03M_impro05a`
and `Ses05M_script01_1b`.

Released totals: ang 1103, exc 1041, hap 595, neu 1708, sad 1084, i.e. 5531
utterances for the four classes with `exc` merged into happiness, 4490 without.
"""

import collections
import os
import re

from mtl_ser.data.corpora.base import CorpusError, Utterance
from mtl_ser.errors import ConfigError

RELEASE_DIR = "IEMOCAP_full_release"
NUM_SESSIONS = 5
# Every label the EmoEvaluation files use (xxx: the evaluators did not agree).
RAW_LABELS = (
    *("ang", "hap", "exc", "neu", "sad"),
    *("fru", "sur", "fea", "dis", "oth", "xxx"),
)
# Named class maps (corpus.iemocap_classes); labels a map lacks are dropped.
CLASS_MAPS = {
    # The paper's four classes with excitement merged into happiness: 5531.
    "paper4_exc": {
        "ang": "anger",
        "hap": "happiness",
        "exc": "happiness",
        "neu": "neutral",
        "sad": "sadness",
    },
    # The paper's four classes, excitement dropped: 4490.
    "paper4": {"ang": "anger", "hap": "happiness", "neu": "neutral", "sad": "sadness"},
}
KINDS = ("both", "improvised", "scripted")

_UID = re.compile(
    r"^Ses(0[1-5])([FM])_(impro0[1-8][ab]?|script0[1-3]_[1-3]b?)_([FM])(\d{3})$"
)
_NUM = r"(\d+(?:\.\d+)?)"
_LABEL_LINE = re.compile(
    rf"^\[\s*{_NUM}\s*-\s*{_NUM}\s*\]\s+(\S+)\s+(\S+)\s+"
    rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]$"
)
_EVALUATOR_LINE = re.compile(r"^[A-Z]+-[A-Za-z0-9]+:")
_GENDERS = {"F": "female", "M": "male"}


def parse_classes(spec: str) -> dict[str, str]:
    """The class map named or spelled out by `spec`.

    Args:
      spec: a key of CLASS_MAPS, or a custom map "raw:name,raw:name,..." such
        as "ang:anger,hap:happiness,exc:happiness,neu:neutral,sad:sadness".

    Returns:
      {raw IEMOCAP label: emotion class name}.

    Raises:
      ConfigError: naming corpus.iemocap_classes, when spec is neither.
    """
    field = f"corpus.iemocap_classes={spec!r}"
    if spec in CLASS_MAPS:
        return dict(CLASS_MAPS[spec])
    if ":" not in spec:
        raise ConfigError(
            f"{field}: choose one of {sorted(CLASS_MAPS)} or write a map such as "
            "'ang:anger,hap:happiness,neu:neutral,sad:sadness'"
        )
    mapping = {}
    for entry in spec.split(","):
        raw, sep, name = (part.strip() for part in entry.partition(":"))
        if not sep or not raw or not name or ":" in name:
            raise ConfigError(f"{field}: entry {entry.strip()!r} is not 'raw:name'")
        if raw not in RAW_LABELS:
            raise ConfigError(
                f"{field}: {raw!r} is not an IEMOCAP label; choose from {RAW_LABELS}"
            )
        if raw in mapping:
            raise ConfigError(f"{field}: {raw!r} is mapped twice")
        mapping[raw] = name
    return mapping


def find_release(root: str) -> str:
    """The `IEMOCAP_full_release` folder: `root` itself or its child."""
    root = os.path.abspath(root)
    for candidate in (os.path.join(root, RELEASE_DIR), root):
        if os.path.isdir(os.path.join(candidate, "Session1")):
            return candidate
    raise CorpusError(
        f"{root}: IEMOCAP not found (expected {RELEASE_DIR}/Session1..5/ in it, "
        "or Session1..5/ directly)"
    )


def load_with_summary(
    root: str, *, classes: str = "paper4_exc", kind: str = "both"
) -> tuple[list[Utterance], collections.Counter]:
    """Reads IEMOCAP from its release layout.

    Args:
      root: `IEMOCAP_full_release/` or the folder holding it.
      classes: a class map for parse_classes ("paper4_exc", "paper4" or custom).
      kind: "both", "improvised" (impro dialogs) or "scripted" (script dialogs).

    Returns:
      (utterances, dropped). Utterances are those of `kind` whose label the map
      keeps, sorted by uid: speaker "Ses01F", group "Ses01", labels "emotion"
      (mapped name), "gender", "valence", "arousal" (IEMOCAP's activation) and
      "dominance" (floats as released, 1..5). `dropped` counts by raw label the
      utterances of `kind` that the map drops, e.g. {"fru": n, "xxx": m}.

    Raises:
      ConfigError: classes or kind is not a valid option.
      CorpusError: naming the path (and line), when a folder is missing, a label
        line is malformed or has an unknown id or label, an id is repeated or
        does not belong to its file, or a kept utterance has no wav.
    """
    class_map = parse_classes(classes)
    if kind not in KINDS:
        raise ConfigError(f"corpus.iemocap_kind={kind!r}: choose one of {KINDS}")
    release = find_release(root)
    utterances, dropped, seen = [], collections.Counter(), {}
    for session in range(1, NUM_SESSIONS + 1):
        session_dir = os.path.join(release, f"Session{session}")
        for where, match, raw, vad in _session_labels(session_dir, session):
            uid = match.group(0)
            if uid in seen:
                raise CorpusError(f"{where}: {uid} is also labelled at {seen[uid]}")
            seen[uid] = where
            improvised = match.group(3).startswith("impro")
            if kind != "both" and improvised != (kind == "improvised"):
                continue
            if raw not in class_map:
                dropped[raw] += 1
                continue
            utterances.append(
                _utterance(session_dir, where, match, class_map[raw], vad)
            )
    if not utterances:
        raise CorpusError(
            f"{release}: no utterances left with classes={classes!r}, kind={kind!r} "
            f"(dropped by label: {dict(dropped)})"
        )
    utterances.sort(key=lambda u: u.uid)
    return utterances, dropped


def _utterance(session_dir: str, where: str, match, emotion: str, vad) -> Utterance:
    """The Utterance of a label line (`match`: its id), checking its wav."""
    uid = match.group(0)
    dialog = uid.rsplit("_", 1)[0]
    path = os.path.join(session_dir, "sentences", "wav", dialog, f"{uid}.wav")
    if not os.path.isfile(path):
        raise CorpusError(f"{where}: {uid} has no audio file {path}")
    gender = _GENDERS[match.group(4)]
    return Utterance(
        uid=uid,
        path=path,
        speaker=f"Ses{match.group(1)}{match.group(4)}",
        group=f"Ses{match.group(1)}",
        gender=gender,
        labels={
            "emotion": emotion,
            "gender": gender,
            "valence": vad[0],
            "arousal": vad[1],
            "dominance": vad[2],
        },
    )


def load(
    root: str, *, classes: str = "paper4_exc", kind: str = "both"
) -> list[Utterance]:
    """load_with_summary without the dropped-label counts."""
    return load_with_summary(root, classes=classes, kind=kind)[0]


def _session_labels(session_dir: str, session: int):
    """Yields ("file:line", uid match, raw label, (V, A, D)) for one session."""
    label_dir = os.path.join(session_dir, "dialog", "EmoEvaluation")
    if not os.path.isdir(label_dir):
        raise CorpusError(f"{label_dir}: IEMOCAP label folder not found")
    names = sorted(
        name
        for name in os.listdir(label_dir)
        if name.endswith(".txt")
        and not name.startswith("._")  # macOS AppleDouble metadata.
        and os.path.isfile(os.path.join(label_dir, name))
    )
    if not names:
        raise CorpusError(f"{label_dir}: no EmoEvaluation .txt files")
    for name in names:
        path = os.path.join(label_dir, name)
        for line_no, uid, raw, vad in _read_label_file(path):
            where = f"{path}:{line_no}"
            match = _UID.match(uid)
            if not match:
                raise CorpusError(f"{where}: {uid!r} is not an IEMOCAP utterance id")
            if int(match.group(1)) != session or uid.rsplit("_", 1)[0] != name[:-4]:
                raise CorpusError(f"{where}: {uid} does not belong in {name}")
            yield where, match, raw, vad


def _read_label_file(path: str):
    """Yields (line number, uid, raw label, (V, A, D)) per utterance line."""
    # Only the ASCII fields are parsed, so odd bytes in free-text evaluator
    # comments must not stop the read.
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("%") or _EVALUATOR_LINE.match(line):
                continue
            match = _LABEL_LINE.match(line)
            if not match:
                raise CorpusError(f"{path}:{line_no}: malformed label line {line!r}")
            _, _, uid, raw, *vad = match.groups()
            if raw not in RAW_LABELS:
                raise CorpusError(
                    f"{path}:{line_no}: label {raw!r} is not one of {RAW_LABELS}"
                )
            yield line_no, uid, raw, tuple(float(v) for v in vad)
