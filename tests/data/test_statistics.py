"""data.normalisation: which statistics standardise each utterance's log-mels.

The per-speaker and per-utterance statistics are held to numpy's mean and std
of the frames they stand for; the batches, the train step's input, the
evaluation windows, prediction and every output follow them.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from mtl_ser import Predictor
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import (
    batches,
    cache,
    corpora,
    inputs,
    pipeline,
    run_data,
    splits,
    statistics,
)
from mtl_ser.errors import ConfigError
from mtl_ser.experiments import cv, sweeps
from mtl_ser.outputs import prediction_io, report
from mtl_ser.training import build, checks, evaluate, loop
from mtl_ser.training import workdir as workdir_lib

TASKS = tasks_lib.make_tasks("emotion,gender", "anger,happiness,neutral,sadness", "mse")


def _frames(split, rows):
    return np.concatenate([np.asarray(split.store.get(r), np.float64) for r in rows])


@pytest.mark.parametrize("mode", ["speaker", "utterance"])
def test_statistics_are_those_of_the_group_frames(smoke_config, mode):
    smoke_config.data.normalisation = mode
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    seen = set()
    for split in data.splits.values():
        mean, std = split.band_stats
        assert mean.shape == std.shape == (len(split), smoke_config.features.n_mels)
        for i, speaker in enumerate(split.speakers):
            group = [
                r
                for j, r in enumerate(split.rows)
                if (split.speakers[j] == speaker if mode == "speaker" else j == i)
            ]
            x = _frames(split, group)
            np.testing.assert_allclose(mean[i], x.mean(0), rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(std[i], x.std(0), rtol=1e-5)
            seen.add(speaker)
    assert len(seen) == 6  # Every speaker of every split, the test's included.
    # The training split's statistics stay beside them (normalisation.json).
    train = run_data.band_statistics(data.splits["train"])
    np.testing.assert_array_equal(data.mean, train[0])


class _Store:
    def __init__(self, mels):
        self.lengths = np.array([len(m) for m in mels])
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.frames = np.concatenate(mels)


def test_a_speaker_statistics_read_only_that_speaker_frames():
    rng = np.random.default_rng(0)
    mels = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 9, 4, 7)]
    speakers = ["a", "b", "a", "b"]
    mean, std = statistics.group_statistics(_Store(mels), np.arange(4), speakers)
    a = np.concatenate([mels[0], mels[2]]).astype(np.float64)
    np.testing.assert_allclose(mean[0], a.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[2], a.std(0), rtol=1e-6)
    np.testing.assert_array_equal(mean[0], mean[2])
    # Another speaker's frames change nothing of speaker a's.
    mels[1] = mels[1] * 10 + 3
    again = statistics.group_statistics(_Store(mels), np.arange(4), speakers)
    np.testing.assert_array_equal(again[0][[0, 2]], mean[[0, 2]])
    assert not np.allclose(again[0][1], mean[1])
    # A constant band does not divide by zero.
    flat = statistics.group_statistics(_Store([np.ones((4, 2))]), [0], ["a"])
    assert np.all(flat[1] > 0)


def test_labels_do_not_enter_the_statistics(smoke_config):
    smoke_config.data.normalisation = "speaker"
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    balanced = smoke_config.copy_and_resolve_references()
    balanced.data.class_weights = "balanced"  # Other masks, same frames.
    other = run_data.build_data(balanced, TASKS, verbose=False)
    for name, split in data.splits.items():
        for a, b in zip(split.band_stats, other.splits[name].band_stats, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("device_cache", [False, True])
def test_train_batches_carry_each_example_statistics(smoke_config, device_cache):
    smoke_config.data.normalisation = "speaker"
    smoke_config.data.speed_factors = (0.9,)
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    split = data.splits["train"]
    table = batches.crop_table(split)
    store = None
    if device_cache:
        frames, table = batches.device_frames(table, max_bytes=2**30)
        store = jax.device_put(frames)
    kw = dict(crop=smoke_config.data.crop_frames, batch_size=8, seed=1)
    batch = next(iter(pipeline.train_dataset(split, data, table=table, **kw)))
    mean, std = split.band_stats
    np.testing.assert_array_equal(batch["mean"], mean[batch["utt"]])
    np.testing.assert_array_equal(batch["std"], std[batch["utt"]])
    host = next(iter(pipeline.train_dataset(split, data, **kw)))
    spec = build.input_spec(smoke_config, (data.mean, data.std))
    x = inputs.model_inputs(batch, store, jax.random.key(0), spec)
    want = (host["db"] - batch["mean"][:, None]) / batch["std"][:, None]
    np.testing.assert_allclose(np.asarray(x)[..., 0], want, rtol=1e-6, atol=1e-6)


def test_train_normalisation_batches_are_unchanged(smoke_config):
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    split = data.splits["train"]
    assert split.band_stats == ()
    batch = next(
        iter(pipeline.train_dataset(split, data, crop=32, batch_size=8, seed=1))
    )
    assert set(batch) == {"db", "labels", "masks", "utt"}
    spec = build.input_spec(smoke_config, (data.mean, data.std))
    x = inputs.model_inputs(batch, None, jax.random.key(0), spec)
    np.testing.assert_array_equal(
        np.asarray(x)[..., 0], (batch["db"] - data.mean) / data.std
    )


def test_evaluation_windows_use_each_utterance_statistics(smoke_config):
    smoke_config.data.normalisation = "utterance"
    data = run_data.build_data(smoke_config, TASKS, verbose=False)
    split = data.splits["test"]
    windows = pipeline.eval_windows(split, 32, 16)
    x = batches.window_inputs(split, data, windows, 32)
    in_db = dataclasses.replace(split, band_stats=())  # Mean 0, std 1 below.
    plain = batches.window_inputs(in_db, _in_db(data), windows, 32)
    mean, std = split.band_stats
    utt = windows[:, 0]
    np.testing.assert_allclose(
        x[..., 0], (plain[..., 0] - mean[utt][:, None]) / std[utt][:, None], atol=1e-5
    )


def _in_db(data):
    """`data` with mean 0 and std 1 (the windows in dB), for the comparison."""
    return dataclasses.replace(
        data, mean=np.zeros_like(data.mean), std=np.ones_like(data.std)
    )


def test_config_names_a_bad_normalisation(smoke_config):
    smoke_config.data.normalisation = "speakers"
    with pytest.raises(ConfigError, match=r"^data.normalisation='speakers': choose"):
        checks.validate_config(smoke_config)


def test_old_workdirs_read_normalize_as_normalisation(tmp_path, smoke_config):
    saved = smoke_config.to_dict()
    del saved["data"]["normalisation"]
    saved["data"]["normalize"] = False
    assert workdir_lib.upgrade(saved)["data"]["normalisation"] == "none"
    saved["data"]["normalize"] = True
    with open(tmp_path / "config.json", "w") as f:
        json.dump(saved, f)
    workdir_lib.check_config(str(tmp_path), smoke_config.to_dict(), allow_change=False)
    smoke_config.data.normalisation = "speaker"
    with pytest.raises(workdir_lib.WorkdirError, match="'train' -> 'speaker'"):
        workdir_lib.check_config(
            str(tmp_path), smoke_config.to_dict(), allow_change=False
        )


@pytest.fixture(scope="module")
def speaker_run(corpus_root, tmp_path_factory):
    """(config, workdir, results) of a smoke run normalised per speaker."""
    from configs import synthetic

    config = synthetic.get_config("smoke")
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    config.data.normalisation = "speaker"
    workdir = str(tmp_path_factory.mktemp("speaker") / "run")
    return config, workdir, loop.train_and_evaluate(config, workdir)


def test_outputs_say_the_run_is_transductive(speaker_run):
    config, workdir, results = speaker_run
    assert results["normalisation"] == "speaker" and results["transductive"]
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["transductive"] is True
    assert report.results_table(results).startswith("Normalisation: speaker")
    report_md = open(report.write_report(workdir, config, results)).read()
    assert "transductive" in report_md
    # A CV of such runs, and a sweep over them, say so in their headers.
    folds = [splits.Fold("f0", (), ("spk04",))]
    cv_dir = os.path.dirname(workdir)
    os.symlink(workdir, cv.fold_dir(cv_dir, 0, folds[0]))
    summary = cv.summarise(folds, cv_dir)
    assert summary["transductive"] is True
    assert "transductive" in cv.markdown(summary, "emotion").splitlines()[0]
    rows = sweeps.summarise([({"seed": 0}, workdir)], metrics=("test/ua/emotion",))
    assert "transductive): every variant" in sweeps.normalisation_lines(rows)[0]
    train = {**results, "normalisation": "train"}
    assert report.results_table(train).startswith("split")


def test_evaluate_refuses_to_change_the_normalisation(speaker_run):
    config, workdir, _ = speaker_run
    saved = workdir_lib.load_config(workdir)
    given = config.copy_and_resolve_references()
    given.data.normalisation = "train"
    with pytest.raises(workdir_lib.WorkdirError, match="data.normalisation"):
        workdir_lib.evaluation_config(workdir, saved, given.to_dict())


def _test_paths(config, split):
    path_of = {u.uid: u.path for u in corpora.load_corpus(config.corpus)}
    return [path_of[uid] for uid in split.uids]


def _probabilities(rows, task):
    return np.array([list(r[task]["probabilities"].values()) for r in rows])


def test_prediction_by_manifest_speaker_reproduces_the_evaluation(
    speaker_run, tmp_path, monkeypatch
):
    config, workdir, _ = speaker_run
    predictor = Predictor(workdir, verbose=False)
    data = run_data.build_data(config, predictor.tasks, verbose=False)
    split = data.splits["test"]
    paths = _test_paths(config, split)
    manifest = tmp_path / "list.csv"
    lines = [
        "path,speaker",
        *(f"{p},{s}" for p, s in zip(paths, split.speakers, strict=True)),
    ]
    manifest.write_text("\n".join(lines) + "\n")
    listed, speakers, _ = prediction_io.collect([str(manifest)], "manifest")
    assert speakers == list(split.speakers)
    decoded = []  # Each file's log-mel is computed once, in the first pass.
    features = cache.utterance_features
    monkeypatch.setattr(
        cache,
        "utterance_features",
        lambda path, cfg: decoded.append(path) or features(path, cfg),
    )
    rows, skipped = predictor.predict_files(listed, speakers=speakers)
    assert skipped == [] and decoded == listed
    saved = evaluate.read_predictions(os.path.join(workdir, evaluate.PREDICTIONS))
    want = saved["test"]["emotion"]["pred"]
    np.testing.assert_allclose(_probabilities(rows, "emotion"), want, atol=1e-6)
    counts = {s: split.speakers.count(s) for s in split.speakers}
    assert [r["statistics"] for r in rows] == [
        f"speaker {s} ({counts[s]} files)" for s in split.speakers
    ]
    # Without speakers each file is standardised by its own statistics.
    alone, _ = predictor.predict_files(listed[:2])
    assert [r["statistics"] for r in alone] == ["own utterance"] * 2
    assert not np.allclose(_probabilities(alone, "emotion"), want[:2], atol=1e-6)


def test_prediction_by_folder_takes_a_folder_as_one_speaker(speaker_run, tmp_path):
    config, workdir, _ = speaker_run
    predictor = Predictor(workdir, verbose=False)
    data = run_data.build_data(config, predictor.tasks, verbose=False)
    split = data.splits["test"]
    paths = _test_paths(config, split)
    for path, speaker in zip(paths, split.speakers, strict=True):
        os.makedirs(tmp_path / speaker, exist_ok=True)
        os.symlink(path, tmp_path / speaker / os.path.basename(path))
    listed, speakers, _ = prediction_io.collect([str(tmp_path)], "folder")
    assert len(set(speakers)) == len(set(split.speakers))
    rows, _ = predictor.predict_files(listed, speakers=speakers)
    by_name = {os.path.basename(r["path"]): r for r in rows}
    manifest_rows, _ = predictor.predict_files(paths, speakers=list(split.speakers))
    for row in manifest_rows:  # The same groups, so the same predictions.
        got = by_name[os.path.basename(row["path"])]
        assert got["emotion"] == row["emotion"]
        assert got["statistics"].split(" (")[1] == row["statistics"].split(" (")[1]
