"""What launch.py says about its flags and how it ends: help texts, one line
per error, and the table from error to exit status (docs/reliability.md).

Imports nothing heavy at module level: launch.py reads it before parsing flags.
"""

import re

EXIT_CONFIG = 2  # The config, a flag or the workdir cannot work; nothing was done.
EXIT_NONFINITE = 3  # Stopped on a non-finite loss; the diagnostic is named.

MODE_HELP = {
    "train": "train, then evaluate the chosen checkpoint and write report.md",
    "evaluate": "score the workdir's run again (with --eval_out: on other data)",
    "sweep": "every variant of the sweep file given as --config, then the tables",
    "cv": "every fold of split.protocol, then the table",
    "prepare": "a summary of the corpus",
    "predict": "the workdir's best checkpoint on the wav files, folders and "
    "manifests given after the flags",
    "ensemble": "the mean predictions of the runs or CV workdirs given after the "
    "flags, scored in --workdir",
}
# Modes that read the configs their workdirs were trained with.
READ_SAVED_CONFIG = ("evaluate", "predict", "ensemble")
EVAL_OUT_HELP = (
    "--mode=evaluate: score the run on the data of --config (another corpus or "
    "split; the model and its input stay the run's) into this folder."
)
PREDICT_OUT_HELP = "--mode=predict: the output folder (default <workdir>/predictions)."
PREDICT_SPEAKER_HELP = (
    "--mode=predict with a run normalised per speaker: a file's speaker is a "
    "manifest's speaker column, or its folder; without one a file is "
    "standardised by its own statistics."
)


def mode_help() -> str:
    return "What to do. " + "; ".join(f"{m}: {h}" for m, h in MODE_HELP.items())


def exits():
    """(error, exit status, first words of its line, fold its newlines), in
    the order they are tried; any other error is a crash (status 1)."""
    from mtl_ser import errors
    from mtl_ser.data import audio, corpora
    from mtl_ser.experiments import ensemble
    from mtl_ser.outputs import prediction_io
    from mtl_ser.training import faults, preemption

    return (
        (errors.ConfigError, EXIT_CONFIG, "Config error", False),
        (errors.WorkdirError, EXIT_CONFIG, "Workdir error", False),
        (errors.UsageError, EXIT_CONFIG, "Flag error", False),
        (prediction_io.InputError, EXIT_CONFIG, "Input error", False),
        (ensemble.EnsembleError, EXIT_CONFIG, "Ensemble error", False),
        (corpora.CorpusError, EXIT_CONFIG, "Corpus error", True),
        (audio.AudioError, EXIT_CONFIG, "Audio error", True),  # bad_audio="fail"
        (preemption.Preempted, preemption.EXIT_PREEMPTED, "Preempted", False),
        (faults.NonFiniteError, EXIT_NONFINITE, "Stopped", False),
    )


def exit_status(error: BaseException) -> tuple:
    """(exit status, the line to print) for `error`; (None, "") for a crash."""
    for kind, status, words, fold in exits():
        if isinstance(error, kind):
            text = " ".join(str(error).split()) if fold else str(error)
            return status, f"{words}: {text}"
    return None, ""


def flag_error_line(error: Exception, argv) -> str:
    """One line for an error of absl's flag parsing. A KeyError or
    AttributeError is a --config.* override of a field that does not exist."""
    if not isinstance(error, (KeyError, AttributeError)):
        return f"Flag error: {error}"  # A value of the wrong type, a missing flag...
    text = str(error).replace("\\n", " ")
    hint = re.search(r"Did you mean \W*(\w+)\W* instead of \W*(\w+)", text)
    name = hint.group(2) if hint else re.findall(r"\w+", text)[0]
    given = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    flag = next((a for a in given if name in a.split(".")), "--config")
    fix = f"; did you mean {hint.group(1)!r}?" if hint else ""
    return f"Config error: {flag}: no field {name!r}{fix}"


def config_file(config_flag) -> str:
    """--config as given ("path[:arg]"), or "" without one."""
    from ml_collections import config_flags

    if config_flag.value is None:
        return ""
    return config_flags.get_config_filename(config_flag)
