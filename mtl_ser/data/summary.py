"""A one-screen corpus summary: classes, speakers, genders, groups, labels, hours.

For `launch.py --mode=prepare`: a corpus of 10k files and two dozen speakers fits
in about 30 lines of 88 columns. Durations come from each file's header
(soundfile.info), so nothing is decoded. Also the one-line counts a run
prints of what it left out (`unlabelled`) and excluded (`excluded`).
"""

import collections
import re
import statistics
from typing import Iterable, Optional, Sequence

import soundfile

from mtl_ser.data.corpora.base import Utterance

WIDTH = 88  # Columns of the summary.
MAX_WRAPPED_LINES = 6  # Lines a wrapped list (speakers, groups) may take.
_NONE = "(none)"  # Shown for an empty group or a missing categorical label.


def audio_durations(paths: Iterable[str]) -> dict[str, Optional[float]]:
    """Seconds of audio per file, read from its header without decoding.

    Returns:
      {path: seconds}, with None for a file soundfile cannot read (missing, or
      a format libsndfile does not know).
    """
    seconds = {}
    for path in paths:
        if path in seconds:
            continue
        try:
            info = soundfile.info(path)
        except (RuntimeError, OSError, ValueError, TypeError):
            seconds[path] = None
            continue
        ok = info.samplerate > 0 and info.frames >= 0
        seconds[path] = info.frames / info.samplerate if ok else None
    return seconds


def summarise(utterances: Sequence[Utterance], *, durations: bool = True) -> str:
    """Describes a corpus in about 30 lines.

    Args:
      utterances: the corpus, as a corpus adapter returns it.
      durations: read every file's header for total and per-class hours;
        files soundfile cannot read are counted as unreadable.

    Returns:
      Lines: a headline (counts and hours), utterances per emotion class, per
      gender, per speaker and per group (wrapped, long lists cut short), one
      line per other label (dimensions: count, mean and range; categories such
      as split: counts), and any unreadable files.
    """
    utterances = list(utterances)
    seconds = audio_durations(u.path for u in utterances) if durations else None
    lines = [_headline(utterances, seconds)]
    if not utterances:
        return lines[0]
    lines += _emotion_table(utterances, seconds)
    genders = collections.Counter(u.gender or "unknown" for u in utterances)
    lines.append("gender: " + _shares(genders, len(utterances)))
    lines += _speaker_lines(collections.Counter(u.speaker for u in utterances))
    groups = collections.Counter(u.group or _NONE for u in utterances)
    if set(groups) != {_NONE}:
        lines.append(f"groups ({len(groups)}):")
        lines += _wrapped(sorted(groups.items()))
    keys = sorted({k for u in utterances for k in u.labels} - {"emotion", "gender"})
    lines += [_label_line(utterances, key) for key in keys]
    if seconds is not None:
        lines += _unreadable(seconds)
    return "\n".join(lines)


def _headline(utterances, seconds):
    speakers = len({u.speaker for u in utterances})
    text = f"{len(utterances):,} utterances, {speakers:,} speakers"
    if seconds is None:
        return text
    known = [s for s in seconds.values() if s is not None]
    if not known:
        return text + "; no readable audio"
    return (
        f"{text}; {sum(known) / 3600:.2f} h of audio (mean {statistics.mean(known):.1f}"
        f" s, {min(known):.1f}-{max(known):.1f} s)"
    )


def _emotion_table(utterances, seconds):
    """One line per emotion class: count, share and (with durations) hours."""
    counts = collections.Counter(u.labels.get("emotion", _NONE) for u in utterances)
    hours = collections.Counter()
    if seconds is not None:
        for u in utterances:
            hours[u.labels.get("emotion", _NONE)] += (seconds[u.path] or 0.0) / 3600
    width = max(12, *(len(name) for name in counts))
    lines = [f"emotion ({len(counts)} classes)"]
    for name in sorted(counts):
        share = counts[name] / len(utterances)
        line = f"  {name:<{width}} {counts[name]:>8,} {share:7.1%}"
        if seconds is not None:
            line += f" {hours[name]:8.2f} h"
        lines.append(line)
    return lines


def _speaker_lines(speakers):
    """The spread of utterances per speaker, then every speaker's count."""
    lo, hi = min(speakers.values()), max(speakers.values())
    each = f"{lo:,} utterances each"
    if lo != hi:
        median = statistics.median(speakers.values())
        each = f"{lo:,}-{hi:,} utterances each, median {median:g}"
    return [f"speakers ({len(speakers):,}; {each}):"] + _wrapped(
        sorted(speakers.items())
    )


def _shares(counts, total):
    """ "a 3 (75.0%), b 1 (25.0%)", largest first."""
    return ", ".join(f"{k} {n:,} ({n / total:.1%})" for k, n in counts.most_common())


def _wrapped(items):
    """`name count` pairs, two spaces apart, wrapped at WIDTH and cut short."""
    texts = [f"{name} {count:,}" for name, count in items]
    lines, current = [], []
    for text in texts:
        if current and len(_join(current + [text])) > WIDTH:
            lines.append(current)
            current = []
        current.append(text)
    lines.append(current)
    if len(lines) > MAX_WRAPPED_LINES:
        lines = lines[:MAX_WRAPPED_LINES]
        shown = sum(map(len, lines))
        # Make room on the last line for the count of what is left out.
        while len(_join(lines[-1] + [f"... and {len(texts) - shown:,} more"])) > WIDTH:
            lines[-1].pop()
            shown -= 1
        lines[-1].append(f"... and {len(texts) - shown:,} more")
    return [_join(line) for line in lines]


def _join(parts):
    return "  " + "  ".join(parts)


def _label_line(utterances, key):
    """`key: ...`: count, mean and range of numbers, or counts of categories."""
    values = [u.labels[key] for u in utterances if key in u.labels]
    share = f"{len(values):,} of {len(utterances):,} labelled"
    numbers = [v for v in values if isinstance(v, (int, float))]
    if len(numbers) == len(values):
        return (
            f"{key}: {share}, mean {statistics.mean(numbers):.2f}, "
            f"range {min(numbers):.2f} to {max(numbers):.2f}"
        )
    counts = collections.Counter(str(v) for v in values)
    return f"{key}: {share}; " + ", ".join(
        f"{k} {n:,}" for k, n in counts.most_common()
    )


def _unreadable(seconds):
    bad = sorted(path for path, s in seconds.items() if s is None)
    if not bad:
        return []
    return [
        f"{len(bad):,} unreadable file(s) (soundfile cannot open them), e.g. {bad[0]}"
    ]


def unlabelled(task, utterances, kept) -> str:
    """One line counting the utterances left out for want of a main-task label.

    E.g. "Left out 196 of 535 utterances without a label among the classes of
    task emotion: boredom 81, fear 69, disgust 46".
    """
    kept_ids = {u.uid for u in kept}
    labels = collections.Counter(
        str(u.labels.get(task.label_key, "(none)"))
        for u in utterances
        if u.uid not in kept_ids
    )
    counts = ", ".join(f"{label} {n}" for label, n in labels.most_common())
    return (
        f"Left out {len(utterances) - len(kept)} of {len(utterances)} utterances "
        f"without a label among the classes of task {task.name}: {counts}"
    )


def excluded(excluded: Sequence[tuple], total: int) -> str:
    """One line counting the excluded files by kind of problem.

    E.g. "Excluded 3 of 51 audio files as unusable (see excluded.tsv): truncated
    WAV file (2), empty file (1)".

    Args:
      excluded: (uid, path, reason) tuples, as Data.excluded.
      total: the number of files there were.
    """
    # The kind is the reason without its particulars: "empty file (0 bytes)".
    kinds = collections.Counter(
        re.split(r" \(|;", reason)[0] for _, _, reason in excluded
    )
    counts = ", ".join(f"{kind} ({n})" for kind, n in kinds.most_common())
    return (
        f"Excluded {len(excluded)} of {total} audio files as unusable "
        f"(see excluded.tsv): {counts}"
    )
