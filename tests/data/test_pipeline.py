"""Data side: splits, feature cache, normalisation, Grain iterators."""

import os

import jax
import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import batches, cache, corpora, pipeline, run_data, splits
from mtl_ser.training import build, experiment

TASKS = tasks_lib.make_tasks(
    "emotion,gender,arousal", "anger,happiness,neutral,sadness", "mse"
)


@pytest.fixture
def data(smoke_config):
    return run_data.build_data(smoke_config, TASKS, verbose=False)


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


def test_holdout_split_rejects_overlap_and_unknown_speakers(smoke_config):
    utts = corpora.load_corpus(smoke_config.corpus)
    with pytest.raises(ValueError, match="both val and test"):
        splits.holdout_split(utts, ["spk01"], ["spk01"])
    with pytest.raises(ValueError, match="split.test_speakers"):
        splits.holdout_split(utts, ["spk01"], ["nobody"])


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


def test_feature_cache_is_reused_and_keyed_by_config(smoke_config, monkeypatch):
    utts = corpora.load_corpus(smoke_config.corpus)
    first = cache.build_cache(utts, smoke_config.features, verbose=False)

    def fail(*args):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(cache, "utterance_features", fail)
    again = cache.build_cache(utts, smoke_config.features, verbose=False)
    assert again.directory == first.directory
    smoke_config.features.n_mels = 40  # A new config must not hit the old cache.
    with pytest.raises(AssertionError, match="recomputed"):
        cache.build_cache(utts, smoke_config.features, verbose=False)
    leftovers = [n for n in os.listdir(smoke_config.features.cache_dir) if n[0] == "."]
    assert leftovers == []  # The failed build left no partial folder behind.


def test_cached_features_match_direct_computation(data, smoke_config):
    split = data.splits["val"]
    utt = {u.uid: u for u in corpora.load_corpus(smoke_config.corpus)}[split.uids[0]]
    direct = cache.utterance_features(utt.path, smoke_config.features)
    np.testing.assert_array_equal(split.store.get(split.rows[0]), direct)


def _window(mel, start, crop):
    """mel[start:start+crop], padded at the end with the utterance's minimum."""
    out = mel[start : start + crop]
    pad = np.full((crop - len(out), mel.shape[1]), mel.min(), mel.dtype)
    return np.concatenate([out, pad], 0)


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
            np.testing.assert_array_equal(batch["db"][k], _window(mel, s, crop))
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
        want = _window(split.store.get(split.rows[i]), start, crop) - data.mean
        np.testing.assert_array_equal(x[k, ..., 0], want / data.std)
    assert np.all(np.concatenate([b["x"] for b in batches_])[utt < 0] == 0)


def test_the_step_normalises_crops_and_masks_them_with_spec_augment(data):
    """The model input is made in the train step: (db - mean) / std, then
    SpecAugment's stripes, drawn from the step's key."""
    from mtl_ser.data import augment, inputs

    split, crop = data.splits["train"], 64
    batch = next(
        iter(pipeline.train_dataset(split, data, crop=crop, batch_size=8, seed=3))
    )
    spec = inputs.InputSpec(crop, data.mean, data.std)
    key = jax.random.key(0)
    plain = np.asarray(inputs.model_inputs(batch, None, key, spec))
    np.testing.assert_allclose(
        plain[..., 0], (batch["db"] - data.mean) / data.std, rtol=1e-6, atol=1e-6
    )
    masks = augment.SpecAugment(time_masks=2, time_width=10, freq_masks=1, freq_width=5)
    spec = inputs.InputSpec(crop, data.mean, data.std, spec_augment=masks)
    masked = np.asarray(inputs.model_inputs(batch, None, key, spec))
    again = np.asarray(inputs.model_inputs(batch, None, key, spec))
    np.testing.assert_array_equal(masked, again)  # The key decides.
    assert np.any(masked != plain)
    kept = masked != 0
    np.testing.assert_array_equal(masked[kept], plain[kept])  # Only masking.
    zero_frames = np.all(masked == 0, axis=(2, 3)).sum(1)
    zero_bands = np.all(masked == 0, axis=(1, 3)).sum(1)
    assert zero_frames.max() <= 20 and zero_bands.max() <= 5


def test_config_turns_spec_augment_on_in_the_step(smoke_config):
    from mtl_ser.data import inputs

    smoke_config.data.freq_masks, smoke_config.data.freq_mask_bands = 2, 6
    exp = experiment.Experiment(smoke_config, verbose=False)
    spec = build.input_spec(smoke_config, (exp.data.mean, exp.data.std))
    batch = next(exp.train_iterator())
    x = np.asarray(inputs.model_inputs(batch, None, jax.random.key(1), spec))
    zero_bands = np.all(x == 0, axis=(1, 3)).sum(axis=1)  # Per example.
    assert zero_bands.max() > 0 and zero_bands.max() <= 12


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
        np.testing.assert_array_equal(db, _window(mel, start, crop))


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
