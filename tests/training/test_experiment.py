"""Everything a run builds from its config (training/experiment.py): checked
first, and for scoring only what scoring needs."""

import math
import os

import jax
import pytest

from mtl_ser.data import corpora
from mtl_ser.errors import ConfigError
from mtl_ser.training import build, experiment


@pytest.mark.parametrize("method", ["equal", "modo"])
def test_scoring_builds_no_train_step_and_no_state(smoke_config, method):
    smoke_config.weighting.name = method  # modo: several batches per step.
    exp = experiment.Experiment(smoke_config, verbose=False, train=False)
    assert exp.train_fn is exp.param_norm_fn is exp.table is exp.store is None
    assert exp.eval_fn is not None
    leaves = jax.tree.leaves(exp.state)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert exp.batch_size == build.step_batch_size(smoke_config)
    train_rows = len(exp.data.splits["train"].rows)
    assert exp.steps_per_epoch == math.ceil(train_rows / exp.batch_size)
    assert exp.has_val


def test_a_bad_config_fails_before_any_data_unless_the_caller_checked_it(
    smoke_config, tmp_path
):
    cache_dir = smoke_config.features.cache_dir
    smoke_config.features.cache_dir = str(tmp_path / "cache")
    smoke_config.train.evaluate_at = "final"  # Scoring never reads it.
    with pytest.raises(ConfigError, match="^train.evaluate_at='final'"):
        experiment.Experiment(smoke_config, verbose=False, train=False)
    assert not os.path.exists(tmp_path / "cache")  # No feature was computed.
    smoke_config.features.cache_dir = cache_dir
    exp = experiment.Experiment(smoke_config, verbose=False, train=False, checked=True)
    assert exp.config.train.evaluate_at == "final"


def test_without_validation_speakers_every_other_speaker_trains(smoke_config):
    c = smoke_config
    c.split.val_speakers, c.train.evaluate_at = "", "last"
    exp = experiment.Experiment(c, verbose=False, train=False)
    assert not exp.has_val
    tested = set(c.split.test_speakers.split(","))
    trained = [u for u in corpora.load_corpus(c.corpus) if u.speaker not in tested]
    assert exp.steps_per_epoch == math.ceil(len(trained) / c.data.batch_size)
