"""Checkpoints on their own: the latest state with the data iterator's
position, the best state, restoring into shapes (training/checkpointing.py)."""

import jax
import numpy as np

from mtl_ser.training import build, checkpointing, experiment, sharding


def _equal(a, b) -> bool:
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in leaves)


def _trained(exp, it, steps: int):
    state = exp.state
    for _ in range(steps):
        state = _trained_from(exp, state, it)
    return state


def _trained_from(exp, state, it):
    """`state` after one more step (the step donates the state given)."""
    batch = sharding.from_process_local(next(it), exp.mesh)
    return exp.train_fn(state, batch, exp.store)[0]


def _checkpointer(workdir, config):
    t = config.train
    return checkpointing.Checkpointer(
        str(workdir), keep=t.keep_checkpoints, best_metric=t.best_metric
    )


def test_the_latest_state_and_the_data_position_come_back(smoke_config, tmp_path):
    exp = experiment.Experiment(smoke_config, verbose=False)
    it = exp.train_iterator()
    state = _trained(exp, it, 3)
    ckpt = _checkpointer(tmp_path, smoke_config)
    ckpt.save_latest(3, state, it, smoke_config.to_dict())
    ckpt.wait()
    want_next = next(it)["utt"]

    fresh = experiment.Experiment(smoke_config, verbose=False)
    it2 = fresh.train_iterator()
    assert not _equal(fresh.state.params, state.params)
    restored = ckpt.restore_latest(fresh.state, it2)
    assert _equal(restored, state)
    np.testing.assert_array_equal(next(it2)["utt"], want_next)
    # Into the state's shapes alone (what scoring builds), the same values.
    abstract = build.build_eval(smoke_config, exp.tasks, exp.mesh).abstract_state
    scored = checkpointing.restore_state(ckpt.latest, 3, abstract)[0]
    assert _equal(scored, state)
    assert scored.params["model"]["head_emotion"]["kernel"].sharding.is_equivalent_to(
        sharding.replicated(exp.mesh), 2
    )
    ckpt.close()


def test_only_a_better_validation_metric_replaces_the_best_state(
    smoke_config, tmp_path
):
    exp = experiment.Experiment(smoke_config, verbose=False)
    it = exp.train_iterator()
    ckpt = _checkpointer(tmp_path, smoke_config)
    metric = smoke_config.train.best_metric
    state, kept = exp.state, {}
    for step, value, better in ((1, 0.5, True), (2, 0.4, False), (3, 0.7, True)):
        state = _trained_from(exp, state, it)
        kept[step] = jax.device_get(state)
        assert ckpt.save_best(step, state, {metric: value}) is better
    ckpt.wait()
    assert ckpt.best.best_step() == 3 and ckpt.best_value() == 0.7
    assert _equal(ckpt.restore_best(state), kept[3])
    assert not _equal(kept[3], kept[1])
    ckpt.close()
