"""Fixtures shared by the tests of mtl_ser.data: a run's data on the smoke corpus,
a small manifest tree and a small synthetic corpus (corpora/test_manifest.py and
test_summary.py)."""

import pytest

from mtl_ser.data import run_data
from mtl_ser.data.corpora import synthetic
from tests.data.common import TASKS
from tests.data.corpora.common import _wav


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
    _wav(str(root / "audio" / "s1" / "a.wav"), 0.2)
    _wav(str(root / "audio" / "s1" / "b.wav"), 0.3)
    _wav(str(root / "audio" / "s2" / "c.wav"), 0.25, channels=2)
    outside = _wav(str(tmp_path / "elsewhere" / "d.wav"), 0.4)
    return str(root), outside


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.generate(root, num_speakers=4, utterances_per_speaker=4)
    return root
