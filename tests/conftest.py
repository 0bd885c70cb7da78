"""Test setup: 4 fake CPU devices, parsed absl flags, a tiny shared corpus."""

import os
import signal

import jax
import pytest
from absl import flags

# Before JAX initialises its backends (no test touches a device at import time).
jax.config.update("jax_num_cpu_devices", 4)
# Compile with less LLVM optimisation: about a third less suite time, as most of
# it is compilation. Every comparison in the tests is between programs built
# with these same flags (subprocesses inherit them); speed is measured in
# benchmarks/, never here.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()
# Grain reads absl flags; outside launch.py nobody parses them.
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent compilation cache per test worker and the runs it starts.

    Many tests compile the same smoke model's steps; a cache hit loads the
    executable XLA built the first time, so results are unchanged (30% off the
    time of test_loop.py and test_evaluate.py on 2 workers). One folder per
    xdist worker, because two processes writing one entry at once may be read
    half-written (jax locks the folder only with `filelock` installed and a
    size limit set). Tests that start processes side by side give them a folder
    of their own.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = str(tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # Subprocesses: launch.py.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


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


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler during the test, whatever an earlier test or
    library left in this worker (a second SIGINT goes to it); restored after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
