"""--mode=evaluate scores the run as it was trained, with its own config.

A --config that would change what is scored (another split, model, corpus,
features, ...) is refused in one line with status 2, before any work, and the
run's results.json and report.md stay as they were.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

import tests
from mtl_ser.outputs import report
from mtl_ser.training import loop
from mtl_ser.training import workdir as workdir_lib

ROOT = tests.ROOT


@pytest.fixture(scope="module")
def trained(corpus_root, tmp_path_factory):
    """A smoke run trained with weighting 'equal' (the config file says
    'uncertainty', whose extra parameters a restore with it would expect)."""
    from configs import synthetic

    config = synthetic.get_config("smoke")
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    config.weighting.name = "equal"
    config.report.figures = False
    workdir = str(tmp_path_factory.mktemp("evaluate") / "run")
    report.write_report(workdir, config, loop.train_and_evaluate(config, workdir))
    return workdir


def _launch(*args):
    done = subprocess.run(
        [sys.executable, "launch.py", "--mode=evaluate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout, done.stderr


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_evaluate_with_the_config_file_the_run_was_trained_from(trained, corpus_root):
    """docs/usage.md's sequence: train with an override, evaluate with the config
    file alone. The weighting differs (not scored): the run's own is used."""
    before = json.loads(_read(os.path.join(trained, "results.json")))
    code, out, err = _launch(
        f"--workdir={trained}",
        "--config=configs/synthetic.py:smoke",
        f"--config.corpus.root={corpus_root}",
        f"--config.features.cache_dir={os.path.join(corpus_root, 'cache')}",
        "--config.report.figures=False",
    )
    assert code == 0, err[-2000:]
    after = json.loads(_read(os.path.join(trained, "results.json")))
    # The same scores; the subprocess has 1 device to the test's 4, so the
    # last bits of averaged values may differ.
    assert after["scalars"] == pytest.approx(before["scalars"], rel=1e-5, abs=1e-7)
    assert after["scalars"]["test/ua/emotion"] == before["scalars"]["test/ua/emotion"]
    assert "test   emotion    ua" in out


def test_evaluate_needs_no_config(trained):
    code, _, err = _launch(f"--workdir={trained}")
    assert code == 0, err[-2000:]


@pytest.mark.parametrize(
    "overrides, named",
    [
        (
            [
                "--config.split.val_speakers=spk04,spk05",
                "--config.split.test_speakers=spk02,spk03",
            ],
            "split.test_speakers: 'spk04,spk05' -> 'spk02,spk03'",
        ),
        (["--config.model.width=0.25"], "model.width: 0.0625 -> 0.25"),
        (["--config.emotion_classes=anger,sadness"], "emotion_classes:"),
    ],
)  # fmt: skip
def test_a_config_that_changes_what_is_scored_is_refused(
    trained, corpus_root, overrides, named
):
    files = {n: _read(os.path.join(trained, n)) for n in ("results.json", "report.md")}
    code, out, err = _launch(
        f"--workdir={trained}",
        "--config=configs/synthetic.py:smoke",
        f"--config.corpus.root={corpus_root}",
        *overrides,
    )
    assert code == 2
    assert err.startswith("Workdir error: ") and err.count("\n") == 1, err
    assert named in err and "Drop --config" in err
    for name, content in files.items():
        assert _read(os.path.join(trained, name)) == content, name


def test_a_run_without_a_checkpoint_or_a_folder_is_refused(trained, tmp_path):
    empty = tmp_path / "untrained"
    empty.mkdir()
    shutil.copy(os.path.join(trained, "config.json"), empty)
    code, _, err = _launch(f"--workdir={empty}")
    assert code == 2 and err.count("\n") == 1, err
    assert "no checkpoint to evaluate" in err and str(empty) in err
    assert sorted(os.listdir(empty)) == ["config.json"]  # Nothing made.
    code, _, err = _launch(f"--workdir={tmp_path / 'nothing'}")
    assert code == 2 and "no such run folder" in err and err.count("\n") == 1, err


def test_evaluation_config_keeps_the_run_and_takes_only_runtime_fields(trained):
    saved = workdir_lib.load_config(trained)
    given = saved.to_dict()
    given["data"]["eval_batch_size"] = 32
    given["weighting"]["name"] = "uncertainty"  # Not scored: the run's is kept.
    given["optim"]["learning_rate"] = 0.5
    config = workdir_lib.evaluation_config(trained, saved, given)
    assert config.data.eval_batch_size == 32
    assert config.weighting.name == "equal" and config.optim.learning_rate != 0.5
    given["train"]["ema_decay"] = 0.99  # Scored: the averaged weights.
    with pytest.raises(workdir_lib.WorkdirError, match="train.ema_decay: 0.0 -> 0.99"):
        workdir_lib.evaluation_config(trained, workdir_lib.load_config(trained), given)


def _smoke_data(corpus_root):
    return [
        "--config=configs/synthetic.py:smoke",
        f"--config.corpus.root={corpus_root}",
        f"--config.features.cache_dir={os.path.join(corpus_root, 'cache')}",
    ]


def test_eval_out_scores_other_speakers_in_a_folder_of_its_own(
    trained, corpus_root, tmp_path
):
    """The run trained on spk00, spk01: scoring them is allowed, and said."""
    files = {n: _read(os.path.join(trained, n)) for n in ("results.json", "report.md")}
    out = tmp_path / "other"
    code, stdout, err = _launch(
        f"--workdir={trained}",
        f"--eval_out={out}",
        *_smoke_data(corpus_root),
        "--config.split.val_speakers=spk02,spk03",
        "--config.split.test_speakers=spk00,spk01",
    )
    assert code == 0, err[-2000:]
    assert "Scored speakers: val spk02, spk03; test spk00, spk01" in stdout
    assert "WARNING: the run trained on spk00, spk01" in stdout
    results = json.loads(_read(out / "results.json"))
    assert results["seen_in_training"] == ["spk00", "spk01"]
    assert results["speakers"]["test"] == ["spk00", "spk01"]
    assert 0.0 <= results["scalars"]["test/ua/emotion"] <= 1.0
    for name, content in files.items():  # The run's own results stay.
        assert _read(os.path.join(trained, name)) == content, name


def test_eval_out_on_the_runs_own_split_reproduces_its_scores(
    trained, corpus_root, tmp_path
):
    """The same data, the run's statistics and checkpoint: the same scores."""
    from mtl_ser.experiments import rescore

    given = workdir_lib.load_config(trained)
    results = rescore.rescore(trained, given, str(tmp_path / "same"), verbose=False)
    want = json.loads(_read(os.path.join(trained, "results.json")))["scalars"]
    assert results["scalars"] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert results["seen_in_training"] == []
    assert rescore.speakers_line(results).endswith("none of them in the run's "
                                                   "training split")  # fmt: skip


def test_eval_out_refuses_a_changed_model_the_run_itself_and_no_config(
    trained, corpus_root, tmp_path
):
    cases = [
        (
            [f"--eval_out={tmp_path / 'w'}", *_smoke_data(corpus_root),
             "--config.model.width=0.25"],
            "Workdir error: ",
            "changes the model or its input (saved -> given): model.width",
        ),
        (
            [f"--eval_out={trained}", *_smoke_data(corpus_root)],
            "Config error: --eval_out=",
            "the run's own folder",
        ),
        ([f"--eval_out={tmp_path / 'n'}"], "Flag error: ", "needs --config"),
    ]  # fmt: skip
    for args, start, named in cases:
        code, _, err = _launch(f"--workdir={trained}", *args)
        assert code == 2 and err.startswith(start) and err.count("\n") == 1, err
        assert named in err, err
    assert not (tmp_path / "w").exists() and not (tmp_path / "n").exists()
