"""Tasks: label encoding, masked losses, CCC."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.data.corpora.base import Utterance


def _utt(uid, **labels):
    return Utterance(uid, f"/x/{uid}.wav", "s", "", "", labels)


def test_make_tasks_kinds_sizes_and_errors():
    tasks = tasks_lib.make_tasks("emotion,gender,valence", "anger,sadness", "ccc")
    assert [t.output_size for t in tasks] == [2, 2, 1]
    assert tasks[2].kind == tasks_lib.REGRESSION and tasks[2].loss == "ccc"
    with pytest.raises(ValueError, match="unknown task 'mood'"):
        tasks_lib.make_tasks("emotion,mood", "a", "mse")


def test_encode_labels_masks_missing_and_unknown():
    tasks = tasks_lib.make_tasks("emotion,arousal", "anger,sadness", "mse")
    utts = [
        _utt("a", emotion="sadness", arousal=2.0),
        _utt("b", emotion="boredom"),
        _utt("c", emotion="anger", arousal=4.5),
    ]
    labels, masks = tasks_lib.encode_labels(tasks, utts)
    np.testing.assert_array_equal(labels["emotion"], [1, 0, 0])
    np.testing.assert_array_equal(masks["emotion"], [1, 0, 1])
    np.testing.assert_array_equal(labels["arousal"], [2.0, 0.0, 4.5])
    np.testing.assert_array_equal(masks["arousal"], [1, 0, 1])


def test_masked_losses_ignore_masked_examples():
    emo, aro = tasks_lib.make_tasks("emotion,arousal", "a,b,c", "mse")
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [9.0, -9.0, 0.0]])
    labels, mask = jnp.array([0, 1, 2]), jnp.array([1.0, 1.0, 0.0])
    expected = optax.softmax_cross_entropy_with_integer_labels(logits[:2], labels[:2])
    assert float(tasks_lib.task_loss(emo, logits, labels, mask)) == pytest.approx(
        float(expected.mean())
    )
    pred, target = jnp.array([[1.0], [3.0], [100.0]]), jnp.array([2.0, 1.0, 0.0])
    # (1 + 4) / 2 over the two unmasked examples.
    assert float(tasks_lib.task_loss(aro, pred, target, mask)) == pytest.approx(2.5)
    assert float(tasks_lib.task_loss(aro, pred, target, jnp.zeros(3))) == 0.0


def test_ccc_loss_by_hand():
    (aro,) = tasks_lib.make_tasks("arousal", "", "ccc")
    x, y = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([2.0, 2.0, 4.0, 4.0])
    # mean x 2.5, y 3; var x 1.25, var y 1; cov 1; ccc = 2 / (1.25 + 1 + 0.25) = 0.8
    loss = tasks_lib.task_loss(aro, x[:, None], y, jnp.ones(4))
    assert float(loss) == pytest.approx(0.2, abs=1e-6)
