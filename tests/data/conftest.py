"""Fixtures shared by the tests of mtl_ser.data: a run's data on the smoke corpus,
a small manifest tree and a small synthetic corpus (corpora/test_manifest.py and
test_summary.py)."""

import pytest

from mtl_ser.data import run_data
from mtl_ser.data.corpora import synthetic
from tests.data.common import TASKS
from tests.data.corpora.common import RATE, write_wav


@pytest.fixture
def data(smoke_config):
    return run_data.build_data(smoke_config, TASKS, verbose=False)


@pytest.fixture
def tree(tmp_path):
    """A manifest folder: audio/<speaker>/<name>.wav plus one file elsewhere.

    Returns (root, outside_path): the manifest folder and the absolute path of a
    wav outside it.
    """
    root = tmp_path / "corpus"
    write_wav(str(root / "audio" / "s1" / "a.wav"), RATE, seconds=0.2)
    write_wav(str(root / "audio" / "s1" / "b.wav"), RATE, seconds=0.3)
    write_wav(str(root / "audio" / "s2" / "c.wav"), RATE, seconds=0.25, channels=2)
    outside = write_wav(str(tmp_path / "elsewhere" / "d.wav"), RATE, seconds=0.4)
    return str(root), outside


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.generate(root, num_speakers=4, utterances_per_speaker=4)
    return root
