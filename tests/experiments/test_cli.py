"""launch.py's error lines and exit statuses (mtl_ser/experiments/cli.py)."""

import pytest

from mtl_ser import errors
from mtl_ser.data import audio, corpora
from mtl_ser.experiments import cli, ensemble
from mtl_ser.outputs import prediction_io
from mtl_ser.training import faults, preemption


@pytest.mark.parametrize(
    "error, status, line",
    [
        (errors.ConfigError("seed: bad"), 2, "Config error: seed: bad"),
        (errors.WorkdirError("runs/x: in use"), 2, "Workdir error: runs/x: in use"),
        (
            errors.UsageError("--mode=cv needs --workdir"),
            2,
            "Flag error: --mode=cv needs --workdir",
        ),
        (
            prediction_io.InputError("a.wav: no such file"),
            2,
            "Input error: a.wav: no such file",
        ),
        (ensemble.EnsembleError("one member"), 2, "Ensemble error: one member"),
        (corpora.CorpusError("root:\n  no wav/"), 2, "Corpus error: root: no wav/"),
        (audio.AudioError("x.wav:\nbad"), 2, "Audio error: x.wav: bad"),
        (
            preemption.Preempted(40, "SIGTERM"),
            preemption.EXIT_PREEMPTED,
            "Preempted: SIGTERM: saved a checkpoint at step 40 and stopped; run "
            "the same command again to resume",
        ),
        (faults.NonFiniteError("step 3"), cli.EXIT_NONFINITE, "Stopped: step 3"),
    ],
)
def test_each_known_error_is_one_line_and_its_status(error, status, line):
    assert cli.exit_status(error) == (status, line)


def test_any_other_error_is_a_crash():
    assert cli.exit_status(RuntimeError("bug")) == (None, "")
    assert cli.exit_status(ValueError("bug")) == (None, "")


def test_an_override_of_a_missing_field_names_the_flag_and_the_fix():
    argv = ["launch.py", "--config.optim.learnin_rate=1e-3"]
    error = AttributeError('Did you mean "learning_rate" instead of "learnin_rate"?')
    assert cli.flag_error_line(error, argv) == (
        "Config error: --config.optim.learnin_rate: no field 'learnin_rate'; "
        "did you mean 'learning_rate'?"
    )
    assert cli.flag_error_line(KeyError("sed"), ["launch.py", "--config.sed=1"]) == (
        "Config error: --config.sed: no field 'sed'"
    )
