"""Cross-validation: one holdout run per fold, then a table over the folds.

`launch.py --mode=cv` turns the config's protocol (split.protocol, see
data/splits.cv_folds) into folds, runs each as an ordinary training run in
`<workdir>/fold<i>_<name>` with that fold's held-out speakers (normalisation
statistics come from the fold's training speakers only), skips folds whose
results.json exists (so an interrupted CV resumes, a killed fold from its own
checkpoints), and, when every fold is done, writes `cv_results.json` and
`cv.md`: each fold's test metrics, their mean and standard deviation, and the
confusion matrices summed over folds. `--config.split.fold=i` runs fold i only
(one fold per job); a last run without it writes the tables.
"""

import json
import os
from typing import Callable, Sequence

import numpy as np

from mtl_ser import sweeps
from mtl_ser.data import corpora, splits


def folds_of(config) -> list[splits.Fold]:
    """The folds of the config's protocol on its corpus (ConfigError if none)."""
    s = config.split
    return splits.cv_folds(
        corpora.load_corpus(config.corpus),
        s.protocol,
        num_folds=s.folds,
        within_group=s.within_group,
    )


def fold_config(config, fold: splits.Fold):
    """The config of one fold: a holdout run with the fold's speakers."""
    return sweeps.apply_overrides(
        config,
        {
            "split.protocol": "holdout",
            "split.val_speakers": ",".join(fold.val_speakers),
            "split.test_speakers": ",".join(fold.test_speakers),
        },
    )


def fold_dir(workdir: str, index: int, fold: splits.Fold) -> str:
    return os.path.join(workdir, f"fold{index:02d}_{fold.name}")


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
            f"{','.join(fold.test_speakers)}, val {','.join(fold.val_speakers)}",
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
                "val_speakers": list(fold.val_speakers),
                "test_speakers": list(fold.test_speakers),
                "scalars": scalars,
            }
        )
        classes = results.get("classes", {})
        for task, matrix in results["confusion"].get("test", {}).items():
            summed = confusion.get(task, 0)
            confusion[task] = (np.asarray(matrix) + summed).tolist()
    names = [k for k in rows[0]["scalars"] if all(k in r["scalars"] for r in rows)]
    values = {k: np.array([r["scalars"][k] for r in rows], np.float64) for k in names}
    return {
        "folds": rows,
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std()) for k, v in values.items()},
        "confusion": confusion,
        "classes": classes,
    }


def markdown(summary: dict, main_task: str) -> str:
    """The tables: the main task per fold, the other tasks, the confusion."""
    folds, mean, std = summary["folds"], summary["mean"], summary["std"]
    classes = summary["classes"].get(main_task, [])
    main = ["wa", "ua", "macro_precision", "macro_recall", "macro_f1"]
    main += [f"f1_{c}" for c in classes]
    main = [m for m in main if f"{m}/{main_task}" in mean]
    out = [_table(f"{main_task}", main, main_task, folds, mean, std)]
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
        matrix = summary["confusion"][main_task]
        head = "| true \\ predicted | " + " | ".join(classes) + " |"
        lines = [head, "|---" * (len(classes) + 1) + "|"]
        for name, row in zip(classes, matrix, strict=True):
            lines.append(f"| {name} | " + " | ".join(str(x) for x in row) + " |")
        out.append(
            f"Confusion of {main_task}, summed over folds:\n\n" + "\n".join(lines)
        )
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


def write(summary: dict, workdir: str, main_task: str) -> str:
    """Writes cv_results.json and cv.md; returns the markdown."""
    with open(os.path.join(workdir, "cv_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    text = markdown(summary, main_task)
    with open(os.path.join(workdir, "cv.md"), "w") as f:
        f.write(text)
    return text
