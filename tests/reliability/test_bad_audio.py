"""Bad audio never stops a run half-way: it is handled or excluded at cache time.

Each test writes real files: corrupt ones (empty, header-only, all-zero,
truncated, text, NaN, overflowing, a zero sample rate) and awkward but usable
ones (8 and 44.1 kHz, stereo, six channels, 24-bit and float, shorter than one
crop, shorter than one FFT window) into a copy of the synthetic corpus.
"""

import csv
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import librosa
import numpy as np
import pytest
import soundfile as sf

import tests
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import cache, pipeline, run_data
from mtl_ser.data.audio import AudioError
from mtl_ser.data.corpora import synthetic
from mtl_ser.training import loop

ROOT = tests.ROOT
SR = 16_000


def _write_empty(path, wave):
    open(path, "wb").close()


def _write_header_only(path, wave):
    sf.write(path, np.zeros(0, np.int16), SR, subtype="PCM_16")


def _write_all_zero(path, wave):
    sf.write(path, np.zeros_like(wave), SR, subtype="PCM_16")


def _write_truncated(path, wave):
    sf.write(path, wave, SR, subtype="PCM_16")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _write_text(path, wave):
    with open(path, "w") as f:
        f.write("uid,emotion\nspk00_000,anger\n" * 20)


def _write_nan(path, wave):
    wave = wave.copy()
    wave[len(wave) // 2] = np.nan
    sf.write(path, wave, SR, subtype="FLOAT")


def _write_overflowing(path, wave):
    # Finite float samples, but their power overflows float32.
    sf.write(path, wave * 1e25, SR, subtype="FLOAT")


def _write_zero_rate(path, wave):
    sf.write(path, wave, SR, subtype="PCM_16")
    with open(path, "r+b") as f:
        f.seek(24)  # The fmt chunk's sample rate.
        f.write((0).to_bytes(4, "little"))


# uid -> (writer, the kind of problem its reason in excluded.tsv starts with),
# in corpus order.
BAD = {
    "spk00_001": (_write_empty, "empty file"),
    "spk01_002": (_write_header_only, "zero-length audio"),
    "spk01_007": (_write_zero_rate, "unsupported sample rate 0 Hz"),
    "spk02_003": (_write_all_zero, "audio is entirely zero"),
    "spk03_004": (_write_truncated, "truncated WAV file"),
    "spk04_005": (_write_text, "unreadable or not an audio file"),
    "spk05_006": (_write_nan, "audio contains non-finite samples"),
    "spk05_007": (_write_overflowing, "non-finite log-mel features"),
}
FIRST_BAD = "spk00_001"


def _resampled(rate, subtype, channels=1):
    def write(path, wave):
        out = librosa.resample(wave, orig_sr=SR, target_sr=rate)
        sf.write(path, np.stack([out] * channels, 1), rate, subtype=subtype)

    return write


def _cut(num_samples):
    def write(path, wave):
        sf.write(path, wave[:num_samples], SR, subtype="PCM_16")

    return write


# Usable files, in the splits that read them with training crops (spk00, spk01)
# and evaluation windows (spk02 to spk05).
RESAMPLED = {
    "spk00_002": _resampled(8_000, "PCM_16"),
    "spk00_003": _resampled(44_100, "PCM_24"),
}
DOWNMIXED = {  # Identical channels of the original samples: the same features.
    "spk01_000": _resampled(SR, "FLOAT", channels=2),
    "spk01_003": _resampled(SR, "PCM_16", channels=6),
}
SHORT = {  # 0.25 s, shorter than one crop; 5 samples, shorter than n_fft.
    "spk01_001": _cut(SR // 4),
    "spk00_006": _cut(5),
    "spk02_000": _cut(SR // 4),
    "spk04_000": _cut(5),
}
HANDLED = RESAMPLED | DOWNMIXED | SHORT


@pytest.fixture(scope="module")
def bad_corpus(corpus_root, tmp_path_factory):
    """A copy of the session corpus with the BAD and HANDLED files rewritten."""
    root = str(tmp_path_factory.mktemp("bad_corpus"))
    for name in (synthetic.MANIFEST_NAME, synthetic.PARAMS_NAME, synthetic.WAV_DIR):
        source = os.path.join(corpus_root, name)
        copy = shutil.copytree if os.path.isdir(source) else shutil.copy
        copy(source, os.path.join(root, name))
    writers = {uid: w for uid, (w, _) in BAD.items()} | HANDLED
    for uid, write in writers.items():
        path = _wav(root, uid)
        wave, rate = sf.read(path, dtype="float32")
        assert rate == SR
        os.remove(path)
        write(path, wave)
    return root


def _wav(root, uid):
    return os.path.join(root, synthetic.WAV_DIR, f"{uid}.wav")


def _config(smoke_config, root, cache_dir=None, bad_audio="exclude"):
    smoke_config.corpus.root = root
    smoke_config.features.cache_dir = cache_dir or os.path.join(root, "cache")
    smoke_config.data.bad_audio = bad_audio
    return smoke_config


def _aligned_difference(x, y, max_shift=3):
    """Median |x - y| (dB) at the best alignment; trimming may move the start."""
    assert abs(len(x) - len(y)) <= max_shift
    n = min(len(x), len(y)) - max_shift
    return min(
        np.median(np.abs(x[max(s, 0) :][:n] - y[max(-s, 0) :][:n]))
        for s in range(-max_shift, max_shift + 1)
    )


def _read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_bad_files_are_excluded_listed_and_the_run_finishes(
    smoke_config, bad_corpus, tmp_path, capsys
):
    # The HANDLED files stay in: training crops them, evaluation windows them.
    config = _config(smoke_config, bad_corpus)
    workdir = str(tmp_path / "run")
    results = loop.train_and_evaluate(config, workdir)
    out = capsys.readouterr().out

    assert results["step"] == config.train.num_steps
    assert os.path.isfile(os.path.join(workdir, "results.json"))
    rows = _read_tsv(os.path.join(workdir, "excluded.tsv"))
    assert {r["uid"]: r["path"] for r in rows} == {
        uid: _wav(bad_corpus, uid) for uid in BAD
    }
    for row in rows:
        assert row["reason"].startswith(BAD[row["uid"]][1]), row
    summary = [line for line in out.splitlines() if line.startswith("Excluded ")]
    kinds = ", ".join(f"{kind} (1)" for _, kind in BAD.values())
    assert summary == [
        f"Excluded {len(BAD)} of 48 audio files as unusable (see excluded.tsv): "
        + kinds
    ], out


def test_awkward_files_are_resampled_downmixed_and_padded(
    smoke_config, bad_corpus, corpus_root
):
    config = _config(smoke_config, bad_corpus)
    tasks = tasks_lib.make_tasks(config.tasks, config.emotion_classes, "mse")
    data = run_data.build_data(config, tasks, verbose=False)
    split_of = {u: name for name, s in data.splits.items() for u in s.uids}
    assert not set(BAD) & set(split_of)
    assert len(split_of) == 48 - len(BAD)
    assert {uid for uid, _, _ in data.excluded} == set(BAD)
    crop = config.data.crop_frames

    def features(uid):
        split = data.splits[split_of[uid]]
        x = split.store.get(split.rows[split.uids.index(uid)])
        assert np.all(np.isfinite(x)), uid
        return x, cache.utterance_features(_wav(corpus_root, uid), config.features)

    for uid in DOWNMIXED:
        x, original = features(uid)
        np.testing.assert_allclose(x, original, atol=0.05, err_msg=uid)
    for uid in RESAMPLED:  # The same frames below 2.5 kHz, give or take a trim.
        x, original = features(uid)
        assert _aligned_difference(x[:, :40], original[:, :40]) < 0.5, uid
    for uid in SHORT:
        x, _ = features(uid)
        assert 1 <= len(x) < crop, uid
    # Short files are padded to one full window: training crops and eval windows.
    train = data.splits["train"]
    short = [train.uids.index(u) for u in ("spk01_001", "spk00_006")]
    crops = iter(pipeline.train_dataset(train, data, crop=crop, batch_size=8, seed=0))
    seen = set()
    while not seen.issuperset(short):
        batch = next(crops)
        assert batch["db"].shape == (8, crop, config.features.n_mels)
        assert np.all(np.isfinite(batch["db"]))
        seen.update(batch["utt"].tolist())
    for name, uid in (("val", "spk02_000"), ("test", "spk04_000")):
        windows = pipeline.eval_windows(data.splits[name], crop, 32)
        i = data.splits[name].uids.index(uid)
        assert windows[windows[:, 0] == i].tolist() == [[i, 0]]


def test_fail_mode_stops_at_the_first_bad_file_before_training(
    smoke_config, bad_corpus, tmp_path, monkeypatch
):
    first = re.escape(_wav(bad_corpus, FIRST_BAD))
    computed = []
    real = cache.utterance_features

    def counted(path, cfg):
        computed.append(path)
        return real(path, cfg)

    monkeypatch.setattr(cache, "utterance_features", counted)
    fresh = str(tmp_path / "fresh_cache")
    config = _config(smoke_config, bad_corpus, fresh, bad_audio="fail")
    workdir = tmp_path / "run"
    with pytest.raises(AudioError, match=f"^{first}: empty file"):
        loop.train_and_evaluate(config, str(workdir))
    assert computed == [_wav(bad_corpus, u) for u in ("spk00_000", FIRST_BAD)]
    assert not os.path.exists(workdir / "checkpoints")
    assert [n for n in os.listdir(fresh) if n[0] != "."] == []  # No cache.

    # A cache built while excluding records the exclusions; "fail" still fails.
    config.data.bad_audio = "exclude"
    tasks = tasks_lib.make_tasks(config.tasks, config.emotion_classes, "mse")
    run_data.build_data(config, tasks, verbose=False)
    computed.clear()
    config.data.bad_audio = "fail"
    with pytest.raises(AudioError, match=f"^{first}: empty file.*feature cache"):
        loop.train_and_evaluate(config, str(workdir))
    assert computed == []  # A cache hit.
    assert not os.path.exists(workdir / "checkpoints")


def test_missing_files_and_an_all_bad_corpus(smoke_config, bad_corpus, tmp_path):
    cfg = _config(smoke_config, bad_corpus, str(tmp_path / "cache")).features
    utts = {u.uid: u for u in synthetic.load(bad_corpus)}
    gone = dataclasses.replace(
        utts["spk00_000"], uid="gone", path=str(tmp_path / "gone.wav")
    )
    store = cache.build_cache([utts["spk00_000"], gone], cfg, verbose=False)
    assert store.uids == ("spk00_000",)
    assert store.excluded == (("gone", gone.path, "file not found"),)
    with pytest.raises(AudioError, match=f"none of the 3 audio files.*{FIRST_BAD}"):
        cache.build_cache([utts[u] for u in list(BAD)[:3]], cfg, verbose=False)
    with pytest.raises(ValueError, match="data.bad_audio='skip'"):
        cache.build_cache([gone], cfg, bad_audio="skip")


def _good_utterances(corpus_root):
    return synthetic.load(corpus_root)[:6]


def _store_contents(store):
    with open(os.path.join(store.directory, "index.json")) as f:
        return json.load(f), np.load(os.path.join(store.directory, "features.npy"))


@pytest.mark.parametrize("crash_in", ["features", "index"])
def test_a_crashed_build_leaves_nothing_and_the_next_equals_a_clean_one(
    crash_in, smoke_config, corpus_root, tmp_path, monkeypatch
):
    utts = _good_utterances(corpus_root)
    cfg = _config(smoke_config, corpus_root, str(tmp_path / "cache")).features
    calls = []

    def crash_after_three(real, *args, **kwargs):
        calls.append(args)
        if len(calls) > 3 or crash_in == "index":
            raise MemoryError("injected crash in the middle of the build")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        if crash_in == "features":  # While computing the fourth file.
            target = (cache, "utterance_features", cache.utterance_features)
        else:  # While writing index.json, features.npy being written.
            target = (cache.json, "dump", cache.json.dump)
        patch.setattr(*target[:2], functools.partial(crash_after_three, target[2]))
        with pytest.raises(MemoryError, match="injected"):
            cache.build_cache(utts, cfg, verbose=False)
    assert os.listdir(cfg.cache_dir) == []  # Neither a final nor a temporary.
    rebuilt = _store_contents(cache.build_cache(utts, cfg, verbose=False))

    cfg.cache_dir = str(tmp_path / "clean")
    clean = _store_contents(cache.build_cache(utts, cfg, verbose=False))
    assert rebuilt[0] == clean[0]
    np.testing.assert_array_equal(rebuilt[1], clean[1])


_KILLED_BUILD = """
import os, sys, time
from configs import synthetic as config_file
from mtl_ser.data import cache
from mtl_ser.data.corpora import synthetic

corpus, cache_dir, ready = sys.argv[1:]
cfg = config_file.get_config("smoke").features
cfg.cache_dir = cache_dir

def stall(src, dst):  # Everything is written; only the rename is left.
    open(ready, "w").close()
    time.sleep(600)

os.replace = stall
cache.build_cache(synthetic.load(corpus)[:6], cfg, verbose=False)
"""


def test_a_build_killed_with_sigkill_is_never_read_as_complete(
    smoke_config, corpus_root, tmp_path
):
    utts = _good_utterances(corpus_root)
    cfg = _config(smoke_config, corpus_root, str(tmp_path / "cache")).features
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, corpus_root, cfg.cache_dir, str(ready)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, "the build exited before the rename"
            assert time.monotonic() < deadline, "the build never got to the rename"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The killed build left a complete-looking folder, under its temporary name.
    (leftover,) = os.listdir(cfg.cache_dir)
    assert leftover.startswith(".")
    assert f"-{socket.gethostname()}-{proc.pid}-" in leftover
    assert os.path.isfile(os.path.join(cfg.cache_dir, leftover, "index.json"))
    # A live builder's folder (this process's) must survive the clean-up.
    live = f".{'0' * 16}-{socket.gethostname()}-{os.getpid()}-abcd1234"
    os.mkdir(os.path.join(cfg.cache_dir, live))

    store = cache.build_cache(utts, cfg, verbose=False)
    key = os.path.basename(store.directory)
    assert leftover.startswith(f".{key}-")  # The killed build was of this cache.
    assert sorted(os.listdir(cfg.cache_dir)) == sorted([live, key])
    cfg.cache_dir = str(tmp_path / "clean")
    clean = _store_contents(cache.build_cache(utts, cfg, verbose=False))
    after_kill = _store_contents(store)
    assert after_kill[0] == clean[0]
    np.testing.assert_array_equal(after_kill[1], clean[1])
