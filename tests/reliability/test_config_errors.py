"""Guarantee 5: config and environment errors fail before any work, in one line."""

import subprocess
import sys

import pytest

import tests
from mtl_ser.training import checks, loop

ROOT = tests.ROOT

ALL_SPEAKERS = ",".join(f"spk{i:02d}" for i in range(6))


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"tasks": "emotion", "weighting.name": "mgda"}, "weighting.name='mgda'"),
        ({"data.batch_size": 6}, "data.batch_size=6"),  # 4 devices.
        ({"corpus.name": "emodb", "corpus.root": "/no/such/dir"}, "corpus.root="),
        ({"corpus.name": "iemocap", "corpus.root": ""}, "corpus.root is required"),
        ({"split.test_speakers": "spk99"}, "split.test_speakers"),
        (
            {"split.val_speakers": "spk00", "split.test_speakers": ALL_SPEAKERS[6:]},
            "train split is empty",
        ),
        ({"train.on_nonfinite": "ignore"}, "train.on_nonfinite='ignore'"),
        ({"train.ema_decay": 1.0}, "train.ema_decay=1.0"),
        ({"model.deltas": 3}, "model.deltas=3"),
        ({"model.pool_size": (1, 0)}, "model.pool_size=(1, 0)"),
        ({"model.pool_size": (2,)}, "model.pool_size=(2,)"),
        ({"train.evaluate_at": "final"}, "train.evaluate_at='final'"),
        ({"split.val_speakers": ""}, "split.val_speakers=''"),
        ({"data.class_weights": "inverse"}, "data.class_weights='inverse'"),
        ({"data.bad_audio": "skip"}, "data.bad_audio='skip'"),
        (
            {"train.cpu_library_fusions": "dot,convolution"},
            "train.cpu_library_fusions='dot,convolution'",
        ),
    ],
)
def test_impossible_configs_fail_in_one_line_before_any_work(
    smoke_config, tmp_path, overrides, field
):
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = smoke_config
        for section in sections:
            node = node[section]
        node[name] = value
    workdir = tmp_path / "run"
    with pytest.raises(checks.ConfigError) as error:
        loop.train_and_evaluate(smoke_config, str(workdir))
    message = str(error.value)
    assert field in message and "\n" not in message
    assert not workdir.exists()  # Nothing written, the next fixed run is clean.


@pytest.mark.parametrize(
    "override, field",
    [
        ("--config.model.width=wide", "--config.model.width=wide"),  # Wrong type.
        ("--config.trian.num_steps=5", "no field 'trian'; did you mean 'train'?"),
        # Checked after parsing (checks.validate_config), reported the same way.
        ("--config.model.name=resnet", "Config error: model.name='resnet'"),
        ("--config.optim.learning_rate=-0.1", "optim.learning_rate=-0.1: must be"),
    ],
)
def test_flag_errors_name_the_field(override, field, tmp_path):
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/synthetic.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        override,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert field in proc.stderr
    assert not (tmp_path / "run").exists()


def test_fewer_speakers_than_folds_fails_before_any_fold(smoke_config, tmp_path):
    from mtl_ser.experiments import modes

    smoke_config.split.protocol, smoke_config.split.folds = "kfold", 10
    with pytest.raises(checks.ConfigError) as error:
        modes.cross_validate(smoke_config, modes.Options(workdir=str(tmp_path / "cv")))
    assert str(error.value) == (
        "split.folds=10: the corpus has 6 speakers, the protocol needs at least 10"
    )
    assert not (tmp_path / "cv").exists()
