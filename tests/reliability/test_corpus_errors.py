"""Corpus mistakes fail before any work, in one line, and leave no workdir.

A malformed manifest, a corpus folder of the wrong layout, or classes the
training speakers never say: `launch.py` prints one line naming the file or the
field and exits with status 2; `train_and_evaluate` raises before its workdir
holds anything, and removes it.
"""

import os
import shutil
import subprocess
import sys

import pytest

import tests
from mtl_ser.data import corpora
from mtl_ser.errors import ConfigError
from mtl_ser.training import loop

ROOT = tests.ROOT


def _manifest(tmp_path, corpus_root, edit):
    """A copy of the synthetic corpus's manifest.csv, edited; its path."""
    with open(os.path.join(corpus_root, "manifest.csv")) as f:
        lines = f.read().splitlines()
    path = tmp_path / "manifest.csv"
    lines = edit(lines)
    # Relative paths of the synthetic manifest resolve against its own folder.
    header = lines[0].split(",")
    column = header.index("path") if "path" in header else None
    rows = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if column is not None and cells[column] and not os.path.isabs(cells[column]):
            cells[column] = os.path.join(corpus_root, cells[column])
        rows.append(",".join(cells))
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _drop_column(name):
    def edit(lines):
        header = lines[0].split(",")
        k = header.index(name)
        return [
            ",".join(c for i, c in enumerate(x.split(",")) if i != k) for x in lines
        ]

    return edit


def _missing_file(lines):
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("path")] = "nowhere/gone.wav"
    return [lines[0], ",".join(cells), *lines[2:]]


CASES = {
    "missing column": (_drop_column("speaker"), "speaker"),
    "duplicate row": (lambda lines: [*lines, lines[1]], "line"),
    "missing file": (_missing_file, "gone.wav does not exist"),
    "no rows": (lambda lines: lines[:1], "a header but no rows"),
}


@pytest.mark.parametrize("case", CASES)
def test_manifest_mistakes_name_the_file_and_leave_no_workdir(
    smoke_config, corpus_root, tmp_path, case
):
    edit, message = CASES[case]
    smoke_config.corpus.name = "manifest"
    smoke_config.corpus.root = _manifest(tmp_path, corpus_root, edit)
    workdir = tmp_path / "run"
    with pytest.raises(corpora.CorpusError) as error:
        loop.train_and_evaluate(smoke_config, str(workdir))
    assert message in str(error.value)
    assert str(smoke_config.corpus.root) in str(error.value)
    assert not workdir.exists()


def test_wrong_layouts_and_missing_classes_fail_in_one_line(
    smoke_config, corpus_root, tmp_path
):
    """Through launch.py: status 2, one line on stderr, no workdir."""
    nested = tmp_path / "emodb" / "wav"
    nested.mkdir(parents=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    emodb = "--config.corpus.name=emodb"
    classes = "'joy' (training utterances per class: anger 4, joy 0)"
    cases = [
        ([emodb, f"--config.corpus.root={nested}"], "Corpus error", f"{nested}/wav"),
        ([emodb, f"--config.corpus.root={empty}"], "Corpus error", str(empty)),
        (
            [
                f"--config.corpus.root={corpus_root}",
                "--config.emotion_classes=anger,joy",
            ],
            "Config error: emotion_classes",
            classes,
        ),
    ]
    for k, (overrides, kind, named) in enumerate(cases):
        workdir = tmp_path / f"run{k}"
        done = subprocess.run(
            [
                sys.executable,
                "launch.py",
                "--config=configs/synthetic.py:smoke",
                f"--workdir={workdir}",
                f"--config.features.cache_dir={tmp_path / 'cache'}",
                *overrides,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.startswith(kind) and done.stderr.count("\n") == 1, (
            done.stderr
        )
        assert named in done.stderr
        assert not workdir.exists()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_a_class_without_training_utterances_is_a_config_error(smoke_config, tmp_path):
    smoke_config.emotion_classes = "anger,joy"
    with pytest.raises(ConfigError, match="^emotion_classes: no training utterance"):
        loop.train_and_evaluate(smoke_config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
