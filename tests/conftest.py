"""Test setup: 4 fake CPU devices, parsed absl flags, a tiny shared corpus."""

import os
import tempfile

# librosa compiles numba kernels with cache=True into site-packages. Two xdist
# workers compiling the same kernel at once, in a fresh environment, can write
# a cache that segfaults its reader (numba/numba#4807, #10128); CI hit exactly
# that. Each worker gets its own cache directory, set before numba is imported.
os.environ.setdefault(
    "NUMBA_CACHE_DIR",
    os.path.join(
        tempfile.gettempdir(),
        f"mtl_ser-numba-{os.getpid()}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
    ),
)

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# Before JAX initialises its backends (no test touches a device at import time).
jax.config.update("jax_num_cpu_devices", 4)
# Grain reads absl flags; outside launch.py nobody parses them.
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory):
    """A 6-speaker x 8-utterance synthetic corpus, generated once per session."""
    from mtl_ser.data.corpora import synthetic

    root = str(tmp_path_factory.mktemp("corpus"))
    synthetic.generate(root, num_speakers=6, utterances_per_speaker=8)
    return root


@pytest.fixture
def smoke_config(corpus_root):
    """The synthetic smoke config pointed at the session corpus and its cache."""
    from configs import synthetic

    config = synthetic.get_config("smoke")
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    return config
