"""Training batches (data/batches): crops, epochs, resumption and process shares."""

import numpy as np

from mtl_ser.data import batches, pipeline
from tests.data.common import TASKS, padded_window


def test_train_batches_are_shaped_deterministic_and_resumable(data):
    split = data.splits["train"]
    kw = dict(crop=64, batch_size=8, seed=3)
    it = iter(pipeline.train_dataset(split, data, **kw))
    first = next(it)
    assert first["db"].shape == (8, 64, data.mean.shape[0])
    assert first["db"].dtype == np.float32
    assert set(first["labels"]) == {t.name for t in TASKS}
    state = it.get_state()
    expected = [next(it)["db"] for _ in range(3)]
    again = iter(pipeline.train_dataset(split, data, **kw))
    next(again)
    np.testing.assert_array_equal(next(again)["db"], expected[0])
    again.set_state(state)  # Resume mid-stream: bit for bit.
    for x in expected:
        np.testing.assert_array_equal(next(again)["db"], x)
    other = next(
        iter(pipeline.train_dataset(split, data, crop=64, batch_size=8, seed=4))
    )
    assert not np.array_equal(other["utt"], first["utt"])


def test_each_crop_is_its_utterance_at_the_drawn_start(data):
    """A batch is its examples' log-mels cut at the starts its generator drew,
    padded past the end with the utterance's minimum; labels and masks follow
    the utterance (regression targets standardised)."""
    split, crop = data.splits["train"], 160  # Longer than some utterances.
    make = batches.TrainBatches(
        split,
        data.target_stats,
        batches.crop_table(split),
        output=batches.DB,
        crop=crop,
        batch_size=8,
        seed=7,
    )
    padded = 0
    for b in range(4):
        batch = make.map(b)
        index, copy, start = make.draws(b)
        np.testing.assert_array_equal(batch["utt"], index)
        assert not copy.any()  # No speed copies.
        for k, (i, s) in enumerate(zip(index, start, strict=True)):
            mel = split.store.get(split.rows[i])
            assert 0 <= s <= max(len(mel) - crop, 0)
            np.testing.assert_array_equal(batch["db"][k], padded_window(mel, s, crop))
            padded += len(mel) - s < crop
            assert batch["labels"]["emotion"][k] == split.labels["emotion"][i]
            assert batch["masks"]["gender"][k] == split.masks["gender"][i]
        mean, std = data.target_stats["arousal"]
        want = (split.labels["arousal"][index] - mean) / std
        np.testing.assert_allclose(batch["labels"]["arousal"], want, rtol=1e-6)
    assert padded > 0


def test_epochs_are_permutations_and_flow_into_each_other(data):
    split = data.splits["train"]
    n, size = len(split), 6  # 16 utterances: batches straddle the epochs.
    it = iter(pipeline.train_dataset(split, data, crop=32, batch_size=size, seed=1))
    stream = np.concatenate([next(it)["utt"] for _ in range(3 * n // size)])
    epochs = stream.reshape(3, n)
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1])
    for step in (1, 3):
        want = stream[(step - 1) * size : step * size]
        got = pipeline.train_batch_indices(n, batch_size=size, seed=1, step=step)
        np.testing.assert_array_equal(got, want)


def test_process_shares_are_disjoint_and_together_the_global_batch(data):
    """Process p takes slots p, p + P, ... of every global batch: the shares of
    an epoch are disjoint and cover it, and each example has the crop it has in
    a one-process run (the draws are made per global batch)."""
    split = data.splits["train"]
    n = len(split)
    assert n % 4 == 0  # The smoke corpus: no remainder to reason about.
    kw = dict(crop=32, batch_size=4, seed=0)
    whole = iter(pipeline.train_dataset(split, data, **kw))
    whole = [next(whole) for _ in range(n // 2)]
    shares = []
    for p in range(2):
        it = iter(
            pipeline.train_dataset(split, data, process_index=p, process_count=2, **kw)
        )
        shares.append([next(it) for _ in range(n // 2)])  # 2 of every 4 examples.
    for step, batch in enumerate(whole):
        for p in range(2):
            np.testing.assert_array_equal(shares[p][step]["utt"], batch["utt"][p::2])
            np.testing.assert_array_equal(shares[p][step]["db"], batch["db"][p::2])
    per_process = [np.concatenate([b["utt"] for b in share]) for share in shares]
    for epoch in range(2):
        chunks = [u[epoch * n // 2 : (epoch + 1) * n // 2] for u in per_process]
        assert not set(chunks[0]) & set(chunks[1])
        assert sorted(np.concatenate(chunks)) == list(range(n))
