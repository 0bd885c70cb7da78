"""The one entry point: flags -> config -> mode.

  python launch.py --config=configs/synthetic.py --workdir=runs/synthetic
  python launch.py --config=configs/synthetic.py:smoke --workdir=/tmp/x \
      --config.optim.learning_rate=3e-4
  python launch.py --workdir=runs/synthetic --mode=evaluate
  python launch.py --mode=sweep --config=configs/sweeps/weighting.py \
      --workdir=runs/weighting [--sweep.print_commands]
  python launch.py --mode=cv --config=configs/synthetic.py \
      --config.split.protocol=speaker --workdir=runs/cv
  python launch.py --mode=prepare --config=configs/alexnet_mtl.py:corpus=emodb \
      --config.corpus.root=/data/emodb
  python launch.py --mode=predict --workdir=runs/synthetic a.wav wavs/ list.csv
  python launch.py --mode=ensemble --workdir=runs/ens runs/cv_s0 runs/cv_s1 runs/cv_s2
"""

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/synthetic.py[:smoke].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (resumes if it exists).")
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "sweep", "cv", "prepare", "predict", "ensemble"],
    "What to do (cv: every fold of split.protocol, then the table; prepare: a "
    "summary of the corpus; predict: the workdir's best checkpoint on the wav "
    "files, folders and manifests given after the flags; ensemble: the mean "
    "predictions of the runs or CV workdirs given after the flags, scored in "
    "--workdir).",
)
_PRINT_COMMANDS = flags.DEFINE_bool(
    "sweep.print_commands",
    False,
    "With --mode=sweep: print one launch command per variant and exit.",
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir made with another config (the difference is printed).",
)
_PREDICT_OUT = flags.DEFINE_string(
    "predict_out",
    None,
    "With --mode=predict: the folder for predictions.csv/.json "
    "(default <workdir>/predictions).",
)
_PREDICT_SPEAKER = flags.DEFINE_enum(
    "predict_speaker",
    "manifest",
    ["manifest", "folder"],
    "With --mode=predict and a run normalised per speaker: where a file's "
    "speaker comes from (manifest: a manifest's speaker column; folder: the "
    "files of one folder are one speaker). A file with none is standardised by "
    "its own statistics.",
)
_EVAL_OUT = flags.DEFINE_string(
    "eval_out",
    None,
    "With --mode=evaluate: score the run on the data of --config (another corpus "
    "or split; the model and its input stay the run's) into this folder, never "
    "the run's own results.",
)
# Required, as mark_flags_as_required makes it, except for evaluate, predict and
# ensemble, which read the configs the workdirs were trained with.
flags.register_validator(
    "config",
    lambda value: (
        value is not None or _MODE.value in ("evaluate", "predict", "ensemble")
    ),
    message="Flag --config must have a value other than None.",
)

# Exit statuses besides 0 (done) and 1 (a crash): see the README's Reliability.
EXIT_CONFIG = 2  # The config or the workdir cannot work; nothing was done.
EXIT_NONFINITE = 3  # Stopped on a non-finite loss; the diagnostic is named.


def main(argv):
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.

    from mtl_ser.data import audio, corpora
    from mtl_ser.training import checks, distributed, faults, preemption
    from mtl_ser.training import workdir as workdir_lib

    distributed.maybe_initialize()
    config = _CONFIG.value
    try:
        if _MODE.value == "prepare":
            return _prepare(config)
        if not _WORKDIR.value:
            _exit(EXIT_CONFIG, f"Flag error: --mode={_MODE.value} needs --workdir")
        if _MODE.value == "predict":
            return _predict(config, _WORKDIR.value, argv[1:])
        if _MODE.value == "ensemble":
            return _ensemble(config, _WORKDIR.value, argv[1:])
        if _MODE.value == "sweep":
            return _sweep(config)
        if _MODE.value == "cv":
            return _cross_validate(config, _WORKDIR.value)
        if _MODE.value == "train":
            _train_and_report(config, _WORKDIR.value)
        else:
            _evaluate(config, _WORKDIR.value)
    except checks.ConfigError as e:
        _exit(EXIT_CONFIG, f"Config error: {e}")
    except workdir_lib.WorkdirError as e:
        _exit(EXIT_CONFIG, f"Workdir error: {e}")
    except corpora.CorpusError as e:
        _exit(EXIT_CONFIG, f"Corpus error: {_one_line(e)}")
    except audio.AudioError as e:  # data.bad_audio="fail", or no usable file.
        _exit(EXIT_CONFIG, f"Audio error: {_one_line(e)}")
    except preemption.Preempted as e:
        _exit(preemption.EXIT_PREEMPTED, f"Preempted: {e}")
    except faults.NonFiniteError as e:
        _exit(EXIT_NONFINITE, f"Stopped: {e}")


def _one_line(error) -> str:
    return " ".join(str(error).split())


def _exit(status: int, message: str):
    print(message, file=sys.stderr, flush=True)
    sys.exit(status)


def _report(config, workdir, results):
    """Prints the results table and writes report.md (process 0 only)."""
    import jax

    from mtl_ser.outputs import report

    if results is not None and jax.process_index() == 0:
        print(report.results_table(results))
        print(f"Report: {report.write_report(workdir, config, results)}")


def _train_and_report(config, workdir):
    from mtl_ser.training import loop

    results = loop.train_and_evaluate(
        config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value
    )
    _report(config, workdir, results)


def _evaluate(given, workdir):
    """Scores the run in `workdir` with its own config (`given` may only change
    where the data is and how the evaluation runs); rewrites its results."""
    from mtl_ser import predict
    from mtl_ser.training import loop
    from mtl_ser.training import workdir as workdir_lib

    if _EVAL_OUT.value:
        return _rescore(given, workdir, _EVAL_OUT.value)
    config = predict.load_config(workdir)
    workdir_lib.check_writable(workdir, "--workdir")  # Before any work.
    if given is not None:
        config = workdir_lib.evaluation_config(workdir, config, given.to_dict())
    _report(config, workdir, loop.evaluate_workdir(config, workdir))


def _rescore(given, workdir, out):
    """Scores the run in `workdir` on the data of `given`, into `out`."""
    from mtl_ser import rescore
    from mtl_ser.outputs import report

    if given is None:
        _exit(EXIT_CONFIG, "Flag error: --eval_out needs --config (the data to score)")
    results = rescore.rescore(workdir, given, out)
    print(report.results_table(results))
    print(rescore.speakers_line(results))
    print(f"Results: {os.path.join(out, rescore.FILENAME)}")


def _prepare(config):
    """Prints a one-screen summary of the configured corpus."""
    from mtl_ser.data import corpora, summary
    from mtl_ser.training import checks

    checks.validate_config(config)
    print(summary.summarise(corpora.load_corpus(config.corpus)))


def _cross_validate(config, workdir):
    """Trains every fold not done yet (or split.fold); then writes the tables."""
    import jax

    from mtl_ser import cv
    from mtl_ser.training import checks

    checks.validate_config(config)
    folds = cv.folds_of(config)  # Too few speakers for the protocol fail here.
    only = config.split.fold
    if only >= len(folds):
        raise checks.ConfigError(
            f"split.fold={only}: the protocol has folds 0..{len(folds) - 1}"
        )
    if not cv.run(config, folds, workdir, _train_and_report, only=only):
        print(f"Fold {only} done; other folds remain before the table.")
        return
    if jax.process_index() != 0:
        return
    summary = cv.summarise(folds, workdir)
    main_task = config.tasks.split(",")[0]
    print(cv.write(summary, workdir, main_task, figures=config.report.figures))
    print(f"Tables: {workdir}/cv.md, {workdir}/cv_results.json")


def _predict(config, workdir, inputs):
    """Predicts the files `inputs` name with the run in `workdir`; writes tables."""
    import jax

    from mtl_ser import predict
    from mtl_ser.data import statistics
    from mtl_ser.training import workdir as workdir_lib

    if config is not None:
        _exit(
            EXIT_CONFIG,
            "Flag error: --mode=predict uses the config saved in the workdir; "
            "drop --config",
        )
    if not inputs:
        _exit(
            EXIT_CONFIG,
            "Flag error: --mode=predict needs wav files, folders or manifests "
            "after the flags",
        )
    try:
        paths, speakers, skipped = predict.collect(inputs, _PREDICT_SPEAKER.value)
    except predict.InputError as e:
        _exit(EXIT_CONFIG, f"Input error: {e}")
    out = _PREDICT_OUT.value or os.path.join(workdir, "predictions")
    if not paths:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped)
        _exit(EXIT_CONFIG, f"Input error: nothing to predict: {reasons}")
    predictor = predict.Predictor(workdir)
    if jax.process_index() == 0:  # Before any prediction is computed.
        workdir_lib.check_writable(out, "--predict_out")
    rows, unreadable = predictor.predict_files(paths, speakers=speakers, progress=True)
    skipped += unreadable
    if not rows:
        workdir_lib.remove_if_empty(out)  # Made by check_writable: nothing in it.
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        _exit(EXIT_CONFIG, f"Input error: no file could be predicted: {reasons}{more}")
    if jax.process_index() == 0:
        written = predict.write_predictions(out, predictor, rows, skipped)
        short = sum(bool(row["warning"]) for row in rows)
        warned = f", {short} shorter than one window (see 'warning')" if short else ""
        note = statistics.note(predictor.normalisation)
        if note:
            print(f"{note}; each file's statistics are in 'statistics'")
        print(
            f"Predicted {len(rows)} files{warned}, skipped {len(skipped)} "
            f"({predictor.checkpoint[0]} checkpoint, step "
            f"{predictor.checkpoint[1]}): {', '.join(written)}"
        )


def _ensemble(config, workdir, members):
    """Scores the mean predictions of `members` (runs or CVs) in `workdir`."""
    from mtl_ser import cv, ensemble
    from mtl_ser.outputs import report

    if config is not None:
        _exit(
            EXIT_CONFIG,
            "Flag error: --mode=ensemble reads the members' saved configs; "
            "drop --config",
        )
    try:
        out = ensemble.ensemble(members, workdir)
    except ensemble.EnsembleError as e:
        _exit(EXIT_CONFIG, f"Ensemble error: {e}")
    if out["kind"] == "run":
        print(report.results_table(out["results"]))
        print(f"Results: {workdir}/results.json")
        return
    print(cv.write(out["summary"], workdir, out["main_task"]))
    print(f"Tables: {workdir}/cv.md, {workdir}/cv_results.json")


def _sweep(config):
    """Runs (or prints) every variant of the sweep file given as --config.

    A variant whose split.protocol is a cross-validation protocol is a CV run.
    """
    import jax

    from mtl_ser import sweeps
    from mtl_ser.data import splits
    from mtl_ser.training import checks

    path, _, arg = config_flags.get_config_filename(flags.FLAGS["config"]).partition(
        ":"
    )
    module = sweeps.load(path)
    variants = module.get_sweep(arg or None)
    modes = []
    for overrides in variants:  # Every variant's config is checked up front.
        try:
            variant = sweeps.apply_overrides(config, overrides)
            checks.validate_config(variant)
        except (checks.ConfigError, KeyError) as e:
            raise checks.ConfigError(
                f"sweep variant {sweeps.variant_name(overrides)}: {e}"
            ) from None
        single = variant.split.protocol in splits.SINGLE_SPLITS
        modes.append("train" if single else "cv")
    try:
        sweeps.check_unique(variants)
    except ValueError as e:
        raise checks.ConfigError(f"{path}: {e}") from None
    workdir = _WORKDIR.value
    if _PRINT_COMMANDS.value:
        given = [a for a in sys.argv[1:] if a.startswith("--config.")]
        print(
            "\n".join(
                sweeps.launch_commands(
                    path, arg, workdir, variants, modes=modes, extra_flags=given
                )
            )
        )
        return

    def train(variant_config, run_dir):
        if variant_config.split.protocol in splits.SINGLE_SPLITS:
            _train_and_report(variant_config, run_dir)
        else:
            _cross_validate(variant_config, run_dir)

    runs = sweeps.run(config, variants, workdir, train)
    if jax.process_index() != 0:
        return
    metrics = getattr(module, "METRICS", sweeps.DEFAULT_METRICS)
    rows = sweeps.summarise(runs, metrics, getattr(module, "REFERENCE", None))
    sections = []
    pairs = getattr(module, "PAIRS", ())
    pairs = pairs(arg) if callable(pairs) else pairs
    if pairs:
        metric = getattr(module, "PAIRED_METRIC", metrics[0])
        sections.append(sweeps.paired_markdown(sweeps.paired(runs, pairs, metric)))
    figures = getattr(module, "FIGURES", ())
    if figures:
        sections.append(sweeps.gallery_markdown(runs, workdir, figures))
    labels = getattr(module, "LABELS", None)
    print(sweeps.write_tables(rows, metrics, workdir, sections=sections, labels=labels))
    print(f"Tables: {workdir}/sweep.md, {workdir}/sweep.csv")


def _parse_flags(argv):
    """absl's flag parsing, with each error as one line and status 2."""
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError) as e:  # An override of a missing field.
        text = str(e).replace("\\n", " ")
        hint = re.search(r"Did you mean \W*(\w+)\W* instead of \W*(\w+)", text)
        name = hint.group(2) if hint else re.findall(r"\w+", text)[0]
        given = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        flag = next((a for a in given if name in a.split(".")), "--config")
        fix = f"; did you mean {hint.group(1)!r}?" if hint else ""
        _exit(EXIT_CONFIG, f"Config error: {flag}: no field {name!r}{fix}")
    except flags.Error as e:  # A value of the wrong type, a missing flag, ...
        _exit(EXIT_CONFIG, f"Flag error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
