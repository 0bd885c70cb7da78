"""What each --mode of launch.py runs: one function per mode, one signature.

A mode takes `(config, options)`: the config given with --config (None where
the mode reads the config a workdir was trained with) and the `Options`
launch.py read from its other flags. A mode raises the library's typed errors
(errors.ConfigError, errors.UsageError, ...); launch.py turns each into one
line and an exit status. Only process 0 prints tables and writes reports.
"""

import dataclasses
import functools
import os
from typing import Optional

import jax

from mtl_ser.data import corpora, splits, statistics, summary
from mtl_ser.errors import ConfigError, UsageError
from mtl_ser.experiments import cv, ensemble, paired, rescore, sweeps
from mtl_ser.outputs import predict, prediction_io, report
from mtl_ser.training import checks, loop
from mtl_ser.training import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Options:
    """launch.py's flags besides --config and --mode."""

    workdir: Optional[str] = None
    # predict: the wav files, folders and manifests; ensemble: the member runs.
    inputs: tuple = ()
    allow_config_change: bool = False
    eval_out: Optional[str] = None  # evaluate: score on --config's data, here.
    predict_out: Optional[str] = None  # predict: default <workdir>/predictions.
    predict_speaker: str = "manifest"  # predict: "manifest" or "folder".
    # sweep: the sweep file as given to --config ("path[:arg]"), the
    # --config.* flags given, and whether to print commands instead.
    sweep_file: str = ""
    config_flags: tuple = ()
    print_commands: bool = False


def _workdir(mode: str, options: Options) -> str:
    if not options.workdir:
        raise UsageError(f"--mode={mode} needs --workdir")
    return options.workdir


def _no_config(mode: str, config, why: str) -> None:
    if config is not None:
        raise UsageError(f"--mode={mode} {why}; drop --config")


def _report(config, workdir: str, results) -> None:
    """Prints the results table and writes report.md (process 0 only)."""
    if results is not None and jax.process_index() == 0:
        print(report.results_table(results))
        print(f"Report: {report.write_report(workdir, config, results)}")


def train_and_report(config, workdir: str, *, allow_config_change=False) -> None:
    results = loop.train_and_evaluate(
        config, workdir, allow_config_change=allow_config_change
    )
    _report(config, workdir, results)


def train(config, options: Options) -> None:
    train_and_report(
        config,
        _workdir("train", options),
        allow_config_change=options.allow_config_change,
    )


def evaluate(given, options: Options) -> None:
    """Scores the run in the workdir with its own config (`given` may only
    change where the data is and how the evaluation runs); rewrites its
    results. With --eval_out: scores it on the data of `given`, into there."""
    workdir = _workdir("evaluate", options)
    if options.eval_out:
        return _rescore(given, workdir, options.eval_out)
    config = workdir_lib.load_config(workdir)
    workdir_lib.check_writable(workdir, "--workdir")  # Before any work.
    if given is not None:
        config = workdir_lib.evaluation_config(workdir, config, given.to_dict())
    _report(config, workdir, loop.evaluate_workdir(config, workdir))


def _rescore(given, workdir: str, out: str) -> None:
    if given is None:
        raise UsageError("--eval_out needs --config (the data to score)")
    results = rescore.rescore(workdir, given, out)
    print(report.results_table(results))
    print(rescore.speakers_line(results))
    print(f"Results: {os.path.join(out, rescore.FILENAME)}")


def prepare(config, options: Options) -> None:
    """Prints a one-screen summary of the configured corpus."""
    del options
    checks.validate_config(config)
    print(summary.summarise(corpora.load_corpus(config.corpus)))


def cross_validate(config, options: Options) -> None:
    """Trains every fold not done yet (or split.fold); then writes the tables."""
    workdir = _workdir("cv", options)
    checks.validate_config(config)
    folds = cv.folds_of(config)  # Too few speakers for the protocol fail here.
    only = config.split.fold
    if only >= len(folds):
        raise ConfigError(
            f"split.fold={only}: the protocol has folds 0..{len(folds) - 1}"
        )
    train_fold = functools.partial(
        train_and_report, allow_config_change=options.allow_config_change
    )
    if not cv.run(config, folds, workdir, train_fold, only=only):
        print(f"Fold {only} done; other folds remain before the table.")
        return
    if jax.process_index() != 0:
        return
    summary_ = cv.summarise(folds, workdir)
    main_task = config.tasks.split(",")[0]
    print(cv.write(summary_, workdir, main_task, figures=config.report.figures))
    print(f"Tables: {workdir}/cv.md, {workdir}/cv_results.json")


def predict_files(config, options: Options) -> None:
    """Predicts the files the inputs name with the workdir's run; writes tables."""
    workdir = _workdir("predict", options)
    _no_config("predict", config, "uses the config saved in the workdir")
    if not options.inputs:
        raise UsageError(
            "--mode=predict needs wav files, folders or manifests after the flags"
        )
    paths, speakers, skipped = prediction_io.collect(
        options.inputs, options.predict_speaker
    )
    if not paths:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped)
        raise prediction_io.InputError(f"nothing to predict: {reasons}")
    out = options.predict_out or os.path.join(workdir, "predictions")
    predictor = predict.Predictor(workdir)
    if jax.process_index() == 0:  # Before any prediction is computed.
        workdir_lib.check_writable(out, "--predict_out")
    rows, unreadable = predictor.predict_files(paths, speakers=speakers, progress=True)
    skipped += unreadable
    if not rows:
        workdir_lib.remove_if_empty(out)  # Made by check_writable: nothing in it.
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise prediction_io.InputError(f"no file could be predicted: {reasons}{more}")
    if jax.process_index() == 0:
        written = prediction_io.write_predictions(out, predictor, rows, skipped)
        _print_predicted(predictor, rows, skipped, written)


def _print_predicted(predictor, rows, skipped, written) -> None:
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


def ensemble_runs(config, options: Options) -> None:
    """Scores the mean predictions of the member runs (or CVs) in the workdir."""
    workdir = _workdir("ensemble", options)
    _no_config("ensemble", config, "reads the members' saved configs")
    out = ensemble.ensemble(options.inputs, workdir)
    if out["kind"] == "run":
        print(report.results_table(out["results"]))
        print(f"Results: {workdir}/results.json")
        return
    print(cv.write(out["summary"], workdir, out["main_task"]))
    print(f"Tables: {workdir}/cv.md, {workdir}/cv_results.json")


def _variant_modes(config, variants, path: str) -> list[str]:
    """Checks every variant's config up front; "train" or "cv" for each."""
    modes = []
    for overrides in variants:
        try:
            variant = sweeps.apply_overrides(config, overrides)
            checks.validate_config(variant)
        except (ConfigError, KeyError) as e:
            raise ConfigError(
                f"sweep variant {sweeps.variant_name(overrides)}: {e}"
            ) from None
        single = variant.split.protocol in splits.SINGLE_SPLITS
        modes.append("train" if single else "cv")
    try:
        sweeps.check_unique(variants)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return modes


def sweep(config, options: Options) -> None:
    """Runs (or prints) every variant of the sweep file given as --config; a
    variant whose split.protocol is a cross-validation protocol is a CV run."""
    workdir = _workdir("sweep", options)
    path, _, arg = options.sweep_file.partition(":")
    module = sweeps.load(path)
    variants = module.get_sweep(arg or None)
    modes = _variant_modes(config, variants, path)
    if options.print_commands:
        commands = sweeps.launch_commands(
            path, arg, workdir, variants, modes=modes, extra_flags=options.config_flags
        )
        print("\n".join(commands))
        return

    def run_variant(variant_config, run_dir):
        run_options = dataclasses.replace(options, workdir=run_dir)
        if variant_config.split.protocol in splits.SINGLE_SPLITS:
            train(variant_config, run_options)
        else:
            cross_validate(variant_config, run_options)

    runs = sweeps.run(config, variants, workdir, run_variant)
    if jax.process_index() == 0:
        _sweep_tables(module, arg, runs, workdir)


def _sweep_tables(module, arg: str, runs, workdir: str) -> None:
    metrics = getattr(module, "METRICS", sweeps.DEFAULT_METRICS)
    rows = sweeps.summarise(runs, metrics, getattr(module, "REFERENCE", None))
    sections = []
    pairs = getattr(module, "PAIRS", ())
    pairs = pairs(arg) if callable(pairs) else pairs
    if pairs:
        metric = getattr(module, "PAIRED_METRIC", metrics[0])
        sections.append(paired.markdown(paired.paired(runs, pairs, metric)))
    figures = getattr(module, "FIGURES", ())
    if figures:
        sections.append(sweeps.gallery_markdown(runs, workdir, figures))
    labels = getattr(module, "LABELS", None)
    print(sweeps.write_tables(rows, metrics, workdir, sections=sections, labels=labels))
    print(f"Tables: {workdir}/sweep.md, {workdir}/sweep.csv")


MODES = {
    "train": train,
    "evaluate": evaluate,
    "sweep": sweep,
    "cv": cross_validate,
    "prepare": prepare,
    "predict": predict_files,
    "ensemble": ensemble_runs,
}
