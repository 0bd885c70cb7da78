"""The corpus registry, and launch.py without a workdir (--mode=prepare itself:
tests/experiments/test_modes.py)."""

import os
import subprocess
import sys

import tests
from mtl_ser.data import corpora

ROOT = tests.ROOT


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
