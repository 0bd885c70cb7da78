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

from mtl_ser import predict
from mtl_ser.outputs import report
from mtl_ser.training import loop
from mtl_ser.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    """The README's sequence: train with an override, evaluate with the config
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
    saved = predict.load_config(trained)
    given = saved.to_dict()
    given["data"]["eval_batch_size"] = 32
    given["weighting"]["name"] = "uncertainty"  # Not scored: the run's is kept.
    given["optim"]["learning_rate"] = 0.5
    config = workdir_lib.evaluation_config(trained, saved, given)
    assert config.data.eval_batch_size == 32
    assert config.weighting.name == "equal" and config.optim.learning_rate != 0.5
    given["train"]["ema_decay"] = 0.99  # Scored: the averaged weights.
    with pytest.raises(workdir_lib.WorkdirError, match="train.ema_decay: 0.0 -> 0.99"):
        workdir_lib.evaluation_config(trained, predict.load_config(trained), given)
