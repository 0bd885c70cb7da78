"""data.device_cache: the training log-mels resident on the devices.

The host then sends where each crop starts (batches.INDEX) and the train step
gathers it (inputs.gather_crops). These tests hold the two paths to the same
crops, bit for bit, and the same training steps.
"""

import chex
import jax
import numpy as np
import pytest

from mtl_ser.data import batches, inputs, pipeline, run_data
from mtl_ser.errors import ConfigError
from mtl_ser.training import checks, experiment
from tests.data.common import TASKS
from tests.steps import train_steps


@pytest.mark.parametrize(
    "fixed, speed_factors", [(False, ()), (False, (0.8, 1.25)), (True, ())]
)
def test_device_crops_equal_the_host_crops(smoke_config, fixed, speed_factors):
    smoke_config.data.speed_factors = speed_factors
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    split = data.splits["train"]
    table = batches.crop_table(split)
    frames, resident = batches.device_frames(table, max_bytes=2**30)
    # The split's utterances alone are resident, once per copy that has them.
    copies = [(split.store, split.rows)]
    copies += [(c.store, c.rows[c.rows >= 0]) for c in split.speed_copies]
    assert len(frames) == sum(int(s.lengths[r].sum()) for s, r in copies)
    assert len(frames) < sum(len(s.frames) for s, _ in copies)
    store = jax.device_put(frames)
    crop = 160  # Longer than some utterances: padding is compared too.
    kw = dict(crop=crop, batch_size=8, seed=2, fixed=fixed)
    host = iter(pipeline.train_dataset(split, data, **kw))
    device = iter(pipeline.train_dataset(split, data, table=resident, **kw))
    drawn = batches.TrainBatches(
        split, {}, table, output=batches.DB, crop=crop, batch_size=8, seed=2
    )
    padded, used = 0, set()
    for b in range(6):
        want, got = next(host), next(device)
        assert set(got) == {"first", "frames", "floor", "labels", "masks", "utt"}
        np.testing.assert_array_equal(got["utt"], want["utt"])
        chex.assert_trees_all_equal(got["labels"], want["labels"])
        db = inputs.gather_crops(store, got["first"], got["frames"], got["floor"], crop)
        np.testing.assert_array_equal(np.asarray(db), want["db"])
        padded += int(np.sum(got["frames"] < crop))
        used.update(drawn.draws(b)[1].tolist())
    assert padded > 0
    assert used == set(range(1 + len(speed_factors)))


def test_too_large_a_store_stays_on_the_host(smoke_config, capsys):
    smoke_config.data.device_cache = True
    smoke_config.data.device_cache_max_mb = 0.01
    exp = experiment.Experiment(smoke_config)
    assert exp.store is None
    assert "exceed data.device_cache_max_mb=0.01" in capsys.readouterr().out
    assert "db" in next(exp.train_iterator())


def test_training_on_the_device_store_takes_the_same_steps(smoke_config):
    """Two devices, each with its replica, SpecAugment and noise on."""
    smoke_config.data.time_masks, smoke_config.data.noise_prob = 1, 0.5
    host_exp, _, host = train_steps(smoke_config, 3, devices=2)
    assert host_exp.store is None
    smoke_config.data.device_cache = True
    exp, _, device = train_steps(smoke_config, 3, devices=2)
    assert exp.store.sharding.is_fully_replicated
    assert len(exp.store.sharding.device_set) == 2
    for want, got in zip(host, device, strict=True):
        for key in ("train/loss/total", "train/loss/emotion", "train/grad_norm"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6)


def test_device_cache_and_features_on_device_are_exclusive(smoke_config):
    smoke_config.data.device_cache = smoke_config.data.features_on_device = True
    with pytest.raises(ConfigError, match="data.device_cache=True .* choose one"):
        checks.validate_config(smoke_config)
    smoke_config.data.features_on_device = False
    smoke_config.data.device_cache_max_mb = 0
    with pytest.raises(ConfigError, match="data.device_cache_max_mb=0"):
        checks.validate_config(smoke_config)
