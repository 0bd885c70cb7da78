"""A run's data (data/run_data): splits, normalisation, left-out utterances, weights."""

import jax
import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import corpora, run_data, splits
from tests.data.common import TASKS


def test_splits_never_share_a_speaker(data, smoke_config):
    speakers = {name: set(s.speakers) for name, s in data.splits.items()}
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    assert speakers["test"] == set(
        splits.parse_speakers(smoke_config.split.test_speakers)
    )
    total = sum(len(s) for s in data.splits.values())
    assert total == len(corpora.load_corpus(smoke_config.corpus))


def test_normalisation_uses_training_frames_only(data):
    train = data.splits["train"]
    frames = np.concatenate([train.store.get(r) for r in train.rows])
    np.testing.assert_allclose(data.mean, frames.mean(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(data.std, frames.std(0), rtol=1e-3)
    everything = np.concatenate(
        [s.store.get(r) for s in data.splits.values() for r in s.rows]
    )
    # The held-out speakers would move the statistics: they are really excluded.
    assert np.abs(everything.mean(0) - data.mean).max() > 1e-3


def test_utterances_outside_the_classes_are_counted_not_lost_silently(
    smoke_config, capsys
):
    tasks = tasks_lib.make_tasks("emotion", "anger,sadness", "mse")
    data = run_data.build_data(smoke_config, tasks, verbose=True)
    line = next(
        x for x in capsys.readouterr().out.splitlines() if x.startswith("Left out")
    )
    assert line == (
        f"Left out {data.dropped} of 48 utterances without a label among the "
        "classes of task emotion: happiness 12, neutral 12"
    )


def test_balanced_class_weights_make_every_class_weigh_the_same():
    import jax.numpy as jnp

    emotion, gender, arousal = TASKS
    # Emotion ids with counts 5, 2, 1, 0 (+ two unlabelled); gender 6 and 4.
    emotion_ids = np.array([0, 0, 0, 0, 0, 1, 1, 2, 0, 0], np.int32)
    emotion_mask = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)
    gender_ids = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 0], np.int32)
    split = run_data.SplitData(
        None,
        np.arange(10),
        tuple(f"u{i}" for i in range(10)),
        ("s",) * 10,
        {"emotion": emotion_ids, "gender": gender_ids, "arousal": np.ones(10)},
        {"emotion": emotion_mask, "gender": np.ones(10, np.float32),
         "arousal": np.ones(10, np.float32)},
    )  # fmt: skip
    weighted = run_data.class_balanced(split, TASKS).masks
    # n / (k * n_c): 8 labelled utterances of 3 present classes.
    want = [8 / 15] * 5 + [8 / 6] * 2 + [8 / 3] + [0, 0]
    np.testing.assert_allclose(weighted["emotion"], want, rtol=1e-6)
    np.testing.assert_allclose(
        weighted["gender"], np.where(gender_ids == 0, 10 / 12, 10 / 8), rtol=1e-6
    )
    np.testing.assert_array_equal(weighted["arousal"], split.masks["arousal"])
    # The loss is then the class-weighted mean, as torch's weighted
    # CrossEntropyLoss: with logits right on class 0 only, the loss is the
    # mean over the classes of their own mean loss.
    logits = jnp.where(jnp.arange(4) == 0, 5.0, 0.0)[None].repeat(10, 0)
    per_example = -np.asarray(jax.nn.log_softmax(logits))[np.arange(10), emotion_ids]
    by_class = [per_example[:8][emotion_ids[:8] == c].mean() for c in (0, 1, 2)]
    loss = tasks_lib.task_loss(
        emotion, logits, jnp.asarray(emotion_ids), jnp.asarray(weighted["emotion"])
    )
    assert float(loss) == pytest.approx(np.mean(by_class), rel=1e-5)


def test_config_class_weights_reach_the_training_split_only(smoke_config, monkeypatch):
    calls = []

    def spy(split, tasks):
        calls.append(len(split.rows))
        return run_data.SplitData(
            split.store, split.rows, split.uids, split.speakers, split.labels,
            {k: 2.0 * v for k, v in split.masks.items()},
        )  # fmt: skip

    monkeypatch.setattr(run_data, "class_balanced", spy)
    smoke_config.data.class_weights = "balanced"
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    assert calls == [len(data.splits["train"].rows)]
    assert data.splits["train"].masks["emotion"].max() == 2.0
    assert data.splits["val"].masks["emotion"].max() == 1.0
