"""Grain pipelines (data/pipeline): read threads, workers, eval windows, fixed crops."""

import numpy as np

from mtl_ser.data import batches, pipeline
from mtl_ser.training import experiment
from tests.data.common import padded_window


def test_read_threads_change_neither_the_batches_nor_the_state(data):
    """data.read_threads only changes who makes the batches: 0, 1 and 3 threads
    give the same stream, and a state saved with one resumes with another."""
    split = data.splits["train"]
    kw = dict(crop=32, batch_size=4, seed=5)
    streams, states = {}, {}
    for threads in (0, 1, 3):
        it = iter(pipeline.train_dataset(split, data, read_threads=threads, **kw))
        got = [next(it) for _ in range(3)]
        states[threads] = it.get_state()
        got += [next(it) for _ in range(3)]
        streams[threads] = got
    for threads in (1, 3):
        for a, b in zip(streams[0], streams[threads], strict=True):
            np.testing.assert_array_equal(a["utt"], b["utt"])
            np.testing.assert_array_equal(a["db"], b["db"])
    resumed = iter(pipeline.train_dataset(split, data, read_threads=3, **kw))
    resumed.set_state(states[0])
    for want in streams[0][3:]:
        np.testing.assert_array_equal(next(resumed)["db"], want["db"])


def _reference_windows(lengths, crop, hop):
    """The windows of one utterance, written out one at a time."""
    starts = list(range(0, max(lengths - crop, 0) + 1, hop))
    if lengths > crop and starts[-1] != lengths - crop:
        starts.append(lengths - crop)
    return starts


def test_eval_windows_cover_each_utterance_whole(data):
    split = data.splits["test"]
    for crop, hop in ((64, 32), (100, 7), (300, 50)):
        windows = pipeline.eval_windows(split, crop, hop)
        for i, row in enumerate(split.rows):
            length = split.store.lengths[row]
            starts = windows[windows[:, 0] == i, 1]
            assert starts.tolist() == _reference_windows(length, crop, hop)
    crop, hop = 64, 32
    windows = pipeline.eval_windows(split, crop, hop)
    batches_ = list(
        pipeline.eval_batches(split, data, crop=crop, hop=hop, batch_size=16)
    )
    utt = np.concatenate([b["utt"] for b in batches_])
    assert all(b["x"].shape == (16, crop, 64, 1) for b in batches_)
    assert sorted(set(utt[utt >= 0])) == list(range(len(split)))
    assert (utt >= 0).sum() == len(windows)
    x = np.concatenate([b["x"] for b in batches_])[utt >= 0]
    for k in (0, len(windows) // 2, len(windows) - 1):  # Normalised windows.
        i, start = windows[k]
        want = padded_window(split.store.get(split.rows[i]), start, crop) - data.mean
        np.testing.assert_array_equal(x[k, ..., 0], want / data.std)
    assert np.all(np.concatenate([b["x"] for b in batches_])[utt < 0] == 0)


def test_worker_processes_give_the_same_batches_and_resume(smoke_config):
    """data.num_workers: Grain worker processes make the batches in-process
    iteration makes, and their iterator state restores mid-stream."""

    exp = experiment.Experiment(smoke_config, verbose=False)
    it = exp.train_iterator()
    want = [next(it)["db"] for _ in range(4)]
    exp.config.data.num_workers = 2
    workers = exp.train_iterator()
    try:
        for x in want[:2]:
            np.testing.assert_array_equal(next(workers)["db"], x)
        state = workers.get_state()
    finally:
        workers.close()
    resumed = exp.train_iterator()
    try:
        resumed.set_state(state)
        for x in want[2:]:
            np.testing.assert_array_equal(next(resumed)["db"], x)
    finally:
        resumed.close()


def test_fixed_inputs_are_one_centre_window_per_utterance(data):
    split, crop = data.splits["train"], 64
    lengths = split.store.lengths[split.rows]
    windows = pipeline.eval_windows(split, crop, 32, fixed=True)
    np.testing.assert_array_equal(windows[:, 0], np.arange(len(split)))
    np.testing.assert_array_equal(windows[:, 1], np.maximum(lengths - crop, 0) // 2)
    by_seed = []
    for seed in (1, 2):
        it = iter(
            pipeline.train_dataset(
                split, data, crop=crop, batch_size=8, seed=seed, fixed=True
            )
        )
        by_seed.append({})
        for _ in range(4):
            batch = next(it)
            by_seed[-1].update(zip(batch["utt"].tolist(), batch["db"], strict=True))
    common = set(by_seed[0]) & set(by_seed[1])
    assert len(common) >= 8
    for utt in common:  # The same crop whatever the seed: not random.
        np.testing.assert_array_equal(by_seed[0][utt], by_seed[1][utt])


def test_config_inputs_fixed_reaches_training_and_evaluation(smoke_config, monkeypatch):

    smoke_config.data.inputs = "fixed"
    exp = experiment.Experiment(smoke_config, verbose=False)
    seen = []
    real = pipeline.eval_windows

    def spy(split, crop, hop, *, fixed=False):
        seen.append(fixed)
        return real(split, crop, hop, fixed=fixed)

    monkeypatch.setattr(pipeline, "eval_windows", spy)
    exp.evaluate(exp.state, "val", "val")
    assert seen == [True]
    train = next(exp.train_iterator())
    split, crop = exp.data.splits["train"], smoke_config.data.crop_frames
    for utt, db in zip(train["utt"], train["db"], strict=True):
        mel = split.store.get(split.rows[utt])
        start = batches.centre_start(len(mel), crop)
        np.testing.assert_array_equal(db, padded_window(mel, start, crop))
