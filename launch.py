"""The one entry point: flags -> config -> mode (each mode: mtl_ser/experiments).

python launch.py --config=configs/synthetic.py --workdir=runs/synthetic
python launch.py --mode=cv --config=configs/emodb_loso.py --workdir=runs/cv
python launch.py --mode=sweep --config=configs/sweeps/weighting.py --workdir=runs/w
python launch.py --mode=predict --workdir=runs/synthetic a.wav wavs/ list.csv
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtl_ser.experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/synthetic.py[:smoke].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (resumes if it exists).")
_MODE = flags.DEFINE_enum("mode", "train", list(cli.MODE_HELP), cli.mode_help())
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir made with another config."
)
_EVAL_OUT = flags.DEFINE_string("eval_out", None, cli.EVAL_OUT_HELP)
_PREDICT_OUT = flags.DEFINE_string("predict_out", None, cli.PREDICT_OUT_HELP)
_PREDICT_SPEAKER = flags.DEFINE_enum(
    "predict_speaker", "manifest", ["manifest", "folder"], cli.PREDICT_SPEAKER_HELP
)
_PRINT_COMMANDS = flags.DEFINE_bool(
    "sweep.print_commands", False, "--mode=sweep: print one command per variant."
)
flags.register_validator(  # Evaluate, predict and ensemble read the workdirs'.
    "config",
    lambda value: value is not None or _MODE.value in cli.READ_SAVED_CONFIG,
    message="Flag --config must have a value other than None.",
)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    from mtl_ser.experiments import modes
    from mtl_ser.training import distributed

    distributed.maybe_initialize()
    options = modes.Options(
        workdir=_WORKDIR.value,
        inputs=tuple(argv[1:]),
        allow_config_change=_ALLOW_CONFIG_CHANGE.value,
        eval_out=_EVAL_OUT.value,
        predict_out=_PREDICT_OUT.value,
        predict_speaker=_PREDICT_SPEAKER.value,
        sweep_file=cli.config_file(flags.FLAGS["config"]),
        config_flags=tuple(a for a in sys.argv[1:] if a.startswith("--config.")),
        print_commands=_PRINT_COMMANDS.value,
    )
    try:
        modes.MODES[_MODE.value](_CONFIG.value, options)
    except Exception as e:
        status, line = cli.exit_status(e)  # The table: cli.exits().
        if status is None:
            raise
        print(line, file=sys.stderr, flush=True)
        sys.exit(status)


def _parse_flags(argv):
    """absl's flag parsing, with each error as one line and status 2."""
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError, flags.Error) as e:
        print(cli.flag_error_line(e, argv), file=sys.stderr, flush=True)
        sys.exit(cli.EXIT_CONFIG)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
