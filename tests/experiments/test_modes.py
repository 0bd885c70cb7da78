"""What each --mode of launch.py runs (experiments/modes.py): one function per
mode, each refusing what it cannot use before any work."""

import inspect

import pytest

from mtl_ser.errors import UsageError
from mtl_ser.experiments import cli, modes


def test_prepare_prints_the_corpus_summary(smoke_config, capsys):
    modes.prepare(smoke_config, modes.Options())
    out = capsys.readouterr().out
    assert out.startswith("48 utterances, 6 speakers;")
    assert "gender: female 24 (50.0%), male 24 (50.0%)" in out


def test_every_mode_launch_offers_is_one_function_of_config_and_options():
    assert list(modes.MODES) == list(cli.MODE_HELP)  # launch.py's --mode enum.
    assert set(cli.READ_SAVED_CONFIG) <= set(modes.MODES)
    for name, run in modes.MODES.items():
        params = list(inspect.signature(run).parameters.values())
        assert len(params) == 2, name
        assert all(p.default is inspect.Parameter.empty for p in params), name


@pytest.mark.parametrize("mode", sorted(set(modes.MODES) - {"prepare"}))
def test_a_mode_that_writes_names_itself_when_the_workdir_is_missing(mode):
    with pytest.raises(UsageError, match=f"^--mode={mode} needs --workdir$"):
        modes.MODES[mode](None, modes.Options())


def test_modes_that_read_the_saved_config_refuse_another(tmp_path):
    given = object()  # Any config: refused before it is read.
    options = modes.Options(workdir=str(tmp_path), inputs=("a.wav",))
    for mode in ("predict", "ensemble"):
        with pytest.raises(UsageError, match=f"^--mode={mode} .*; drop --config$"):
            modes.MODES[mode](given, options)
    out = str(tmp_path / "other")
    with pytest.raises(UsageError, match="--eval_out needs --config"):
        modes.evaluate(None, modes.Options(workdir=str(tmp_path), eval_out=out))
    assert not list(tmp_path.iterdir())  # Nothing written.
