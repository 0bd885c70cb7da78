"""Cross-validation: one holdout run per fold, then a table over the folds.

`launch.py --mode=cv` turns the config's protocol (split.protocol, see
data/splits.cv_folds) into folds, runs each as an ordinary training run in
`<workdir>/fold<i>_<name>` with that fold's held-out speakers (normalisation
statistics come from the fold's training speakers only), skips folds whose
results.json exists (so an interrupted CV resumes, a killed fold from its own
checkpoints), and, when every fold is done, writes `cv_results.json` and
`cv.md`: each fold's test metrics, their mean and standard deviation, and the
confusion matrices summed over folds. Beside cv.md go its figures (PNG): the
main task's UA (CCC for a regression task) per fold with mean and std
(`cv_ua.png`), and each classification task's test confusion matrix summed
over folds (`cv_confusion_<task>.png`) and per fold
(`cv_confusion_<task>_<fold>.png`). `--config.split.fold=i` runs fold i only
(one fold per job); a last run without it writes the tables.
"""

import json
import os
from typing import Callable, Sequence

import numpy as np

from mtl_ser import layout
from mtl_ser.data import corpora, splits, statistics
from mtl_ser.outputs import plots, report
from mtl_ser.training import metrics as metrics_lib


def folds_of(config) -> list[splits.Fold]:
    """The folds of the config's protocol on its corpus (ConfigError if none)."""
    s = config.split
    return splits.cv_folds(
        corpora.load_corpus(config.corpus),
        s.protocol,
        num_folds=s.folds,
        within_group=s.within_group,
        validation=s.cv_validation,
    )


fold_dir = layout.fold_dir  # The folder of one fold.


def fold_config(config, fold: splits.Fold):
    """The config of one fold: a holdout run with the fold's speakers."""
    return layout.apply_overrides(
        config,
        {
            "split.protocol": "holdout",
            "split.val_speakers": ",".join(fold.val_speakers),
            "split.test_speakers": ",".join(fold.test_speakers),
        },
    )


def run(config, folds, workdir: str, train: Callable, *, only: int = -1) -> bool:
    """Trains the folds not done yet (or fold `only`); True when all are done.

    `train(config, workdir)` runs one fold (launch.py passes its train mode).
    """
    for i, fold in enumerate(folds):
        if only >= 0 and i != only:
            continue
        path = fold_dir(workdir, i, fold)
        if os.path.exists(os.path.join(path, "results.json")):
            print(f"Fold {i} ({fold.name}) is done: {path}", flush=True)
            continue
        print(
            f"Fold {i + 1}/{len(folds)} ({fold.name}): test "
            f"{','.join(fold.test_speakers)}, val "
            f"{','.join(fold.val_speakers) or '(none)'}",
            flush=True,
        )
        train(fold_config(config, fold), path)
    return all(
        os.path.exists(os.path.join(fold_dir(workdir, i, f), "results.json"))
        for i, f in enumerate(folds)
    )


def summarise(folds: Sequence[splits.Fold], workdir: str) -> dict:
    """cv_results.json's content: per-fold test metrics, mean, std, confusion."""
    rows, confusion, classes = [], {}, {}
    for i, fold in enumerate(folds):
        with open(os.path.join(fold_dir(workdir, i, fold), "results.json")) as f:
            results = json.load(f)
        scalars = {
            k.removeprefix("test/"): v
            for k, v in results["scalars"].items()
            if k.startswith("test/")
        }
        rows.append(
            {
                "fold": fold.name,
                "dir": os.path.basename(fold_dir(workdir, i, fold)),
                "val_speakers": list(fold.val_speakers),
                "test_speakers": list(fold.test_speakers),
                "scalars": scalars,
                "confusion": results["confusion"].get("test", {}),
            }
        )
        classes = results.get("classes", {})
        normalisation = results.get("normalisation", "train")
        for task, matrix in results["confusion"].get("test", {}).items():
            summed = confusion.get(task, 0)
            confusion[task] = (np.asarray(matrix) + summed).tolist()
    names = [k for k in rows[0]["scalars"] if all(k in r["scalars"] for r in rows)]
    values = {k: np.array([r["scalars"][k] for r in rows], np.float64) for k in names}
    return {
        "normalisation": normalisation,
        "transductive": statistics.is_transductive(normalisation),
        "folds": rows,
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std()) for k, v in values.items()},
        "pooled": pooled(confusion, classes),
        "confusion": confusion,
        "classes": classes,
    }


# Metrics of all test utterances together (the summed confusion matrix).
POOLED = ("ua", "wa", "macro_f1")


def pooled(confusion: dict, classes: dict) -> dict:
    """`POOLED` metrics of the confusion matrices summed over folds, named
    `metric/task`: every test utterance counts once, whichever fold tested it
    (the mean over folds weighs each fold, i.e. speaker, equally instead)."""
    out = {}
    for task, matrix in confusion.items():
        m = metrics_lib.confusion_metrics(np.asarray(matrix), classes[task])
        out.update({f"{k}/{task}": m[k] for k in POOLED})
    return out


def bar_metric(summary: dict, main_task: str) -> "str | None":
    """The metric of the per-fold bar chart: ua, else ccc, else None."""
    for metric in ("ua", "ccc"):
        if f"{metric}/{main_task}" in summary["mean"]:
            return metric
    return None


def _confusion_png(task: str, fold: str = "") -> str:
    """The file name of a task's confusion PNG, summed over folds or of `fold`."""
    name = f"cv_confusion_{report.file_part(task)}"
    return name + (f"_{report.file_part(fold)}" if fold else "") + ".png"


def draw(summary: dict, workdir: str, main_task: str) -> None:
    """Writes cv.md's figures into `workdir` (see the module docstring)."""
    metric = bar_metric(summary, main_task)
    if metric:
        plots.fold_bars(
            [row["fold"] for row in summary["folds"]],
            [row["scalars"][f"{metric}/{main_task}"] for row in summary["folds"]],
            os.path.join(workdir, f"cv_{metric}.png"),
            metric=f"test {metric.upper()} of {main_task}",
        )
    for task, matrix in summary["confusion"].items():
        classes = summary["classes"][task]
        plots.confusion(
            matrix,
            classes,
            os.path.join(workdir, _confusion_png(task)),
            title=f"{task}, test, summed over {len(summary['folds'])} folds",
        )
        for row in summary["folds"]:
            if task in row["confusion"]:
                plots.confusion(
                    row["confusion"][task],
                    classes,
                    os.path.join(workdir, _confusion_png(task, row["fold"])),
                    title=f"{task}, test, fold {row['fold']}",
                )


def _figure_sections(summary: dict, main_task: str) -> list[str]:
    """cv.md's links to the figures `draw` writes, with what they show."""
    out = []
    metric = bar_metric(summary, main_task)
    if metric:
        out.append(
            f"Test {metric.upper()} of {main_task} per fold (bars), their mean "
            "(solid line) and mean ± one standard deviation (dashed lines):\n\n"
            f"![{metric} per fold](cv_{metric}.png)"
        )
    for task in summary["confusion"]:
        out.append(
            f"Confusion of {task} on the test speakers, summed over the folds: "
            + report.CONFUSION_SENTENCE
            + f"\n\n![{task}, summed over folds]({_confusion_png(task)})"
        )
    lines = ["Each fold's run report and test confusion matrices:", ""]
    for row in summary["folds"]:
        links = [f"[report]({row['dir']}/report.md)"] + [
            f"[{task} confusion]({_confusion_png(task, row['fold'])})"
            for task in summary["confusion"]
            if task in row["confusion"]
        ]
        lines.append(f"- fold {row['fold']}: " + ", ".join(links))
    out.append("\n".join(lines))
    return out


def markdown(summary: dict, main_task: str, *, figures: bool = False) -> str:
    """The tables: the main task per fold, the other tasks, the confusion.

    With `figures`, also links to the PNGs `draw` writes.
    """
    folds, mean, std = summary["folds"], summary["mean"], summary["std"]
    classes = summary["classes"].get(main_task, [])
    main = ["wa", "ua", "macro_precision", "macro_recall", "macro_f1"]
    main += [f"f1_{c}" for c in classes]
    main = [m for m in main if f"{m}/{main_task}" in mean]
    out = [_table(f"{main_task}", main, main_task, folds, mean, std)]
    note = statistics.note(summary.get("normalisation", "train"))
    if note:
        out.insert(0, f"**{note}.**")
    pooled_main = {
        k: v
        for k, v in summary.get("pooled", {}).items()
        if k.endswith(f"/{main_task}")
    }
    if pooled_main:
        cells = ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in pooled_main.items())
        out.append(
            f"Pooled over the folds ({main_task}, every test utterance once, from "
            f"the summed confusion): {cells}."
        )
    others = sorted(
        {k.split("/", 1)[1] for k in mean if not k.endswith(f"/{main_task}")}
    )
    if others:
        cols = [
            f"ua/{t}" if f"ua/{t}" in mean else f"ccc/{t}"
            for t in others
            if f"ua/{t}" in mean or f"ccc/{t}" in mean
        ]
        out.append(_table("other tasks", cols, None, folds, mean, std))
    if main_task in summary["confusion"]:
        lines = report.confusion_markdown(summary["confusion"][main_task], classes)
        out.append(
            f"Confusion of {main_task}, summed over folds:\n\n" + "\n".join(lines)
        )
    if figures:
        out += _figure_sections(summary, main_task)
    return "\n\n".join(out) + "\n"


def _table(title, columns, task, folds, mean, std) -> str:
    keys = [f"{c}/{task}" if task else c for c in columns]
    lines = [
        f"| fold ({title}) | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for row in folds:
        cells = [f"{row['scalars'][k]:.3f}" for k in keys]
        lines.append(f"| {row['fold']} | " + " | ".join(cells) + " |")
    cells = [f"{mean[k]:.3f} ± {std[k]:.3f}" for k in keys]
    lines.append("| **mean ± std** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(summary: dict, workdir: str, main_task: str, *, figures=True) -> str:
    """Writes cv_results.json, cv.md and (with `figures`) its PNGs.

    Returns:
      The markdown.
    """
    with open(os.path.join(workdir, "cv_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if figures:
        draw(summary, workdir, main_task)
    text = markdown(summary, main_task, figures=figures)
    with open(os.path.join(workdir, "cv.md"), "w") as f:
        f.write(text)
    return text
