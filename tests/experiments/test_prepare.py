"""--mode=prepare and the corpus registry."""

import os
import subprocess
import sys

import tests
from mtl_ser.data import corpora
from mtl_ser.experiments import modes

ROOT = tests.ROOT


def test_prepare_prints_the_corpus_summary(smoke_config, capsys):
    modes.prepare(smoke_config, modes.Options())
    out = capsys.readouterr().out
    assert out.startswith("48 utterances, 6 speakers;")
    assert "gender: female 24 (50.0%), male 24 (50.0%)" in out


def test_a_manifest_reads_a_corpus_as_its_own_adapter_does(smoke_config):
    expected = corpora.load_corpus(smoke_config.corpus)  # synthetic
    smoke_config.corpus.name = "manifest"
    smoke_config.corpus.root = os.path.join(smoke_config.corpus.root, "manifest.csv")
    assert corpora.load_corpus(smoke_config.corpus) == expected


def test_modes_that_write_need_a_workdir():
    cmd = [sys.executable, "launch.py", "--config=configs/synthetic.py:smoke"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Flag error: --mode=train needs --workdir"
