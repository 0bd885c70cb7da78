"""Ensembles: the mean of several runs' utterance-level predictions.

`launch.py --mode=ensemble --workdir=OUT RUN [RUN ...]` reads each member
run's `predictions.npz` (written by its final evaluation: the chosen
checkpoint's class probabilities, or values, per utterance), averages them
utterance by utterance, and scores the average as a run would be scored. The
members are either single runs or cross-validation workdirs (`--mode=cv`) of
the same folds; for the latter every fold is ensembled in
`OUT/fold<i>_<name>/` and OUT gets the usual `cv_results.json` and `cv.md`.
Typical members: one config trained with different seeds.

The members must have the same tasks, classes and held-out utterances, in the
same order; anything else is an EnsembleError naming the member and the
difference.
"""

import json
import os
import types
from typing import Sequence

import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import splits, statistics
from mtl_ser.experiments import cv
from mtl_ser.outputs import report
from mtl_ser.training import evaluate
from mtl_ser.training import workdir as workdir_lib

SPLITS = ("val", "test")


class EnsembleError(ValueError):
    """The members cannot be ensembled; the message names the member and why."""


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise EnsembleError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise EnsembleError(f"{path}: not valid JSON ({e})") from None


def run_tasks(run_dir: str) -> tuple:
    """The Tasks of a run, from its saved config.json."""
    c = _read_json(os.path.join(run_dir, "config.json"))
    return tuple(
        tasks_lib.make_tasks(c["tasks"], c["emotion_classes"], c["regression_loss"])
    )


def run_normalisation(run_dir: str) -> str:
    """A run's data.normalisation, from its saved config.json."""
    c = workdir_lib.upgrade(_read_json(os.path.join(run_dir, "config.json")))
    return c.get("data", {}).get("normalisation", "train")


def _read_member(run_dir: str) -> dict:
    path = os.path.join(run_dir, evaluate.PREDICTIONS)
    if not os.path.exists(path):
        raise EnsembleError(
            f"{path}: not found; a run writes it at its final evaluation "
            "(runs older than the file: --mode=evaluate on the run writes it)"
        )
    try:
        return evaluate.read_predictions(path)
    except (OSError, ValueError) as e:
        raise EnsembleError(f"{path}: unreadable ({e})") from None


def combine(members: Sequence[dict], names: Sequence[str], tasks) -> dict:
    """The mean prediction of every utterance over the members.

    Args:
      members: `evaluate.read_predictions` outputs.
      names: the members' names, for errors.
      tasks: the Tasks the predictions are of.

    Returns:
      The same structure as one member, predictions averaged.

    Raises:
      EnsembleError: when a member lacks a split or task, or its utterances or
        labels differ from the first member's.
    """
    first, out = members[0], {}
    for split in [s for s in SPLITS if s in first]:
        out[split] = {"uids": first[split]["uids"]}
        for task in tasks:
            preds = []
            for member, name in zip(members, names, strict=True):
                if split not in member or task.name not in member[split]:
                    raise EnsembleError(
                        f"{name}: no {split} predictions of {task.name}"
                    )
                if not np.array_equal(member[split]["uids"], first[split]["uids"]):
                    raise EnsembleError(
                        f"{name}: its {split} utterances differ from {names[0]}'s"
                    )
                mine, theirs = member[split][task.name], first[split][task.name]
                for field in ("label", "mask"):
                    if not np.array_equal(mine[field], theirs[field]):
                        raise EnsembleError(
                            f"{name}: its {split} {task.name} labels differ from "
                            f"{names[0]}'s"
                        )
                preds.append(np.asarray(mine["pred"], np.float64))
            if len({p.shape for p in preds}) != 1:
                raise EnsembleError(
                    f"{', '.join(names)}: {split} {task.name} predictions have "
                    f"shapes {[p.shape for p in preds]}"
                )
            out[split][task.name] = {
                "pred": np.mean(preds, axis=0),
                "label": first[split][task.name]["label"],
                "mask": first[split][task.name]["mask"],
            }
    return out


def _as_split(part: dict, tasks) -> tuple:
    """One split of read_predictions' structure as (a SplitData stand-in with
    uids, labels and masks, {task: predictions}): what split_metrics and
    write_predictions take."""
    view = types.SimpleNamespace(
        uids=part["uids"],
        labels={t.name: part[t.name]["label"] for t in tasks},
        masks={t.name: part[t.name]["mask"] for t in tasks},
    )
    return view, {t.name: part[t.name]["pred"] for t in tasks}


def scored(combined: dict, tasks) -> dict:
    """results.json's scalars, confusion and classes for combined predictions."""
    scalars, confusion = {}, {}
    for split in [s for s in SPLITS if s in combined]:
        view, preds = _as_split(combined[split], tasks)
        s, conf = evaluate.split_metrics(split, tasks, view, preds)
        scalars.update(s)
        confusion[split] = conf
    return {
        "scalars": scalars,
        "confusion": confusion,
        "classes": {t.name: list(t.classes) for t in tasks if t.classes},
    }


def ensemble_run(member_dirs: Sequence[str], out_dir: str) -> dict:
    """Ensembles single runs into `out_dir` (results.json, predictions.npz and
    a report.md naming the members).

    Returns:
      The results dict, with "members" (the member folders).
    """
    tasks = run_tasks(member_dirs[0])
    for d in member_dirs[1:]:
        if run_tasks(d) != tasks:
            raise EnsembleError(
                f"{d}: its tasks or classes differ from {member_dirs[0]}'s"
            )
    members = [_read_member(d) for d in member_dirs]
    combined = combine(members, member_dirs, tasks)
    results = scored(combined, tasks)
    results["members"] = [os.path.abspath(d) for d in member_dirs]
    modes = sorted({run_normalisation(d) for d in member_dirs})
    results["normalisation"] = "+".join(modes)
    results["transductive"] = statistics.is_transductive(results["normalisation"])
    os.makedirs(out_dir, exist_ok=True)
    named = {split: _as_split(part, tasks) for split, part in combined.items()}
    evaluate.write_predictions(
        os.path.join(out_dir, evaluate.PREDICTIONS), tasks, named
    )
    workdir_lib.write_json(os.path.join(out_dir, "results.json"), results)
    _write_report(out_dir, results)
    return results


def _write_report(out_dir: str, results: dict) -> None:
    """`out_dir`/report.md: the members and the ensemble's metrics."""
    lines = [
        f"# Ensemble: {os.path.abspath(out_dir)}",
        "",
        "The mean utterance-level predictions of these runs (each run's own "
        "report is in its folder):",
        "",
        *[f"- `{d}`" for d in results["members"]],
        "",
        "```",
        report.results_table(results),
        "```",
    ]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def cv_folds(cv_dir: str) -> list[tuple[str, splits.Fold]]:
    """(fold folder name, Fold) of a finished cross-validation workdir."""
    summary = _read_json(os.path.join(cv_dir, "cv_results.json"))
    return [
        (
            row["dir"],
            splits.Fold(
                row["fold"], tuple(row["val_speakers"]), tuple(row["test_speakers"])
            ),
        )
        for row in summary["folds"]
    ]


def is_cv(member_dir: str) -> bool:
    """Whether a member is a cross-validation workdir (else a single run)."""
    return os.path.exists(os.path.join(member_dir, "cv_results.json"))


def ensemble(member_dirs: Sequence[str], out_dir: str) -> dict:
    """Ensembles runs, or cross-validations fold by fold, into `out_dir`.

    Returns:
      `{"kind": "run", "results": ...}` or `{"kind": "cv", "summary": ...}`
      (cv.summarise's dict, with "members"); either with "main_task", the
      name of the members' first task.

    Raises:
      EnsembleError: fewer than two members, a mix of runs and CV workdirs,
        CVs of different folds, or members that `combine` refuses.
    """
    if len(member_dirs) < 2:
        raise EnsembleError(
            f"an ensemble needs at least two member runs, got {list(member_dirs)}"
        )
    for d in member_dirs:
        if not os.path.isdir(d):
            raise EnsembleError(f"{d}: no such run folder")
        if os.path.abspath(d) == os.path.abspath(out_dir):
            raise EnsembleError(f"{d}: the output folder cannot be a member")
    kinds = {is_cv(d) for d in member_dirs}
    if kinds == {False}:
        results = ensemble_run(member_dirs, out_dir)
        main_task = run_tasks(member_dirs[0])[0].name
        return {"kind": "run", "results": results, "main_task": main_task}
    if len(kinds) == 2:
        raise EnsembleError(
            "the members mix cross-validation workdirs and single runs: "
            + ", ".join(f"{d} ({'cv' if is_cv(d) else 'run'})" for d in member_dirs)
        )
    folds = cv_folds(member_dirs[0])
    for d in member_dirs[1:]:
        if cv_folds(d) != folds:
            raise EnsembleError(
                f"{d}: its folds (names or held-out speakers) differ from "
                f"{member_dirs[0]}'s"
            )
    for name, _ in folds:
        ensemble_run(
            [os.path.join(d, name) for d in member_dirs], os.path.join(out_dir, name)
        )
    # cv.summarise reads each fold's results.json from fold_dir(out, i, fold).
    summary = cv.summarise([fold for _, fold in folds], out_dir)
    summary["members"] = [os.path.abspath(d) for d in member_dirs]
    main_task = run_tasks(os.path.join(member_dirs[0], folds[0][0]))[0].name
    return {"kind": "cv", "summary": summary, "main_task": main_task}
