"""Sweeps: one base config, a list of overrides, one run folder per variant.

A sweep file in `configs/sweeps/` defines

  get_config(arg)  the base config (so `--config.x=y` flags still apply), and
  get_sweep(arg)   a list of override dicts, e.g. {"weighting.name": "mgda",
                   "seed": 1}; `product` builds the cross product of axes.

An override dict may name its variant with the key "variant" (`LABEL`), e.g.
{"variant": "alexnet_stl", "tasks": "emotion", ...}: the label, not the list
of overrides, then names the folder and the table row. It may also define
METRICS (the results.json scalars to tabulate, default `DEFAULT_METRICS`),
REFERENCE (an override dict naming the variant whose step time the others are
compared with) and PAIRS ((variant, baseline) labels compared run by run, or
a function of the sweep file's argument that returns them).

`launch.py --mode=sweep` runs the variants one after another in
`<workdir>/<variant name>`, skips the ones already complete (so an interrupted
sweep resumes where it stopped), and writes `sweep.csv` and `sweep.md`: each
metric's mean and standard deviation over seeds and, when the base config's
`split.protocol` is a cross-validation protocol (each variant is then a CV run
with one folder per fold), over folds too.
"""

import csv
import glob
import importlib.util
import itertools
import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from mtl_ser import layout
from mtl_ser.data import splits, statistics

DEFAULT_METRICS = (
    "test/ua/emotion",
    "test/macro_f1/emotion",
    "test/wa/emotion",
)
LABEL = layout.LABEL  # The override key that names a variant.
apply_overrides = layout.apply_overrides
# What a run folder holds when it is complete: one run's results, or a CV
# run's table over its folds.
RESULTS, CV_RESULTS = "results.json", "cv_results.json"


def load(path: str):
    """Imports a sweep file as a module (it must define get_sweep)."""
    spec = importlib.util.spec_from_file_location("mtl_ser_sweep", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: cannot load a sweep file from here")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path}: a sweep file must define get_sweep()")
    return module


def product(**axes: Iterable[Any]) -> list[dict]:
    """Cross product of axes given as field=values, e.g. product(seed=[0, 1]).

    Dotted fields are spelt with double underscores: weighting__name=[...].
    """
    keys = [k.replace("__", ".") for k in axes]
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*axes.values())
    ]


def variant_name(overrides: Mapping[str, Any]) -> str:
    """A folder name: the variant's label, else its overrides' last field names.

    With a label only the seed is spelt out beside it: `alexnet_mtl,seed=1`.
    """
    if LABEL in overrides:
        rest = {k: v for k, v in overrides.items() if k == "seed"}
        parts = [str(overrides[LABEL])] + [f"{k}={v}" for k, v in rest.items()]
    else:
        parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    name = ",".join(parts) or "base"
    return name.replace("/", "_").replace(" ", "")


def group_name(overrides: Mapping[str, Any]) -> str:
    """The variant's name without its seed: the row that averages its seeds."""
    return variant_name({k: v for k, v in overrides.items() if k != "seed"})


def check_unique(variants: Sequence[Mapping[str, Any]]) -> None:
    """Raises ValueError if two variants would share a run folder."""
    seen: dict[str, Mapping] = {}
    for overrides in variants:
        name = variant_name(overrides)
        if name in seen:
            raise ValueError(
                f"sweep variants {dict(seen[name])} and {dict(overrides)} would "
                f"share the folder {name!r}; give them different labels"
            )
        seen[name] = overrides


def launch_commands(
    sweep_path: str,
    arg: Optional[str],
    workdir: str,
    variants: Sequence[dict],
    *,
    modes: Optional[Sequence[str]] = None,
    extra_flags: Sequence[str] = (),
) -> list[str]:
    """One `launch.py` command per variant, for any cluster scheduler.

    Args:
      sweep_path, arg: the sweep file and its argument.
      workdir: the sweep's root folder.
      variants: the override dicts.
      modes: each variant's launch mode ("train" or "cv"); default train.
      extra_flags: flags given to the sweep itself (e.g. `--config.corpus.root=..`),
        repeated in every command.
    """
    config = f"{sweep_path}:{arg}" if arg else sweep_path
    modes = modes or ["train"] * len(variants)
    commands = []
    for overrides, mode in zip(variants, modes, strict=True):
        flags = [f"--config.{k}={v}" for k, v in overrides.items() if k != LABEL]
        if mode != "train":
            flags.insert(0, f"--mode={mode}")
        run_dir = os.path.join(workdir, variant_name(overrides))
        words = ["python launch.py", f"--config={config}", f"--workdir={run_dir}"]
        commands.append(" ".join([*words, *extra_flags, *flags]))
    return commands


def is_complete(run_dir: str) -> bool:
    return any(os.path.exists(os.path.join(run_dir, f)) for f in (RESULTS, CV_RESULTS))


def run(
    config,
    variants: Sequence[dict],
    workdir: str,
    train_fn: Callable[[Any, str], Any],
) -> list[tuple[dict, str]]:
    """Runs every variant not complete yet; returns (overrides, run dir).

    `train_fn(config, run_dir)` trains one variant (a single run or a CV run;
    launch.py chooses by the variant's split.protocol).
    """
    check_unique(variants)
    done = []
    for i, overrides in enumerate(variants):
        run_dir = os.path.join(workdir, variant_name(overrides))
        if is_complete(run_dir):
            print(f"[{i + 1}/{len(variants)}] {run_dir}: complete, skipped")
        else:
            print(f"[{i + 1}/{len(variants)}] {run_dir}", flush=True)
            train_fn(apply_overrides(config, overrides), run_dir)
        done.append((overrides, run_dir))
    return done


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def records(run_dir: str) -> list[dict]:
    """The trained models of a complete variant run, one record each.

    Returns:
      [{"fold": fold name ("" for a single run), "dir": its run folder,
        "scalars": results.json's scalars, "step_time_ms": ...}], in fold order.
    """
    if os.path.exists(os.path.join(run_dir, RESULTS)):
        dirs = [("", run_dir)]
    else:
        summary = _read_json(os.path.join(run_dir, CV_RESULTS))
        dirs = []
        for i, row in enumerate(summary["folds"]):
            fold = splits.Fold(
                row["fold"], tuple(row["val_speakers"]), tuple(row["test_speakers"])
            )
            dirs.append((fold.name, layout.fold_dir(run_dir, i, fold)))
    out = []
    for fold, path in dirs:
        results = _read_json(os.path.join(path, RESULTS))
        out.append(
            {
                "fold": fold,
                "dir": path,
                "scalars": results["scalars"],
                "step_time_ms": results.get("step_time_ms"),
                "normalisation": results.get("normalisation", "train"),
            }
        )
    return out


def summarise(
    runs: Sequence[tuple[dict, str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    reference: Optional[Mapping[str, Any]] = None,
) -> list[dict]:
    """Groups runs over seeds (and folds); mean and std of each metric.

    Returns:
      One row per group: {"variant", "seeds", "runs" (seeds x folds),
      metric: (mean, std), ..., "step_time_ms": (mean, std),
      "relative_step_time": ratio or None}.
    """
    groups: dict[str, list[dict]] = {}
    seeds: dict[str, set] = {}
    for overrides, run_dir in runs:
        name = group_name(overrides)
        groups.setdefault(name, []).extend(records(run_dir))
        seeds.setdefault(name, set()).add(overrides.get("seed"))
    rows = []
    for name, recs in groups.items():
        row = {"variant": name, "seeds": len(seeds[name]), "runs": len(recs)}
        row["normalisation"] = sorted({r["normalisation"] for r in recs})
        for metric in [*metrics, "step_time_ms"]:
            values = [
                r["scalars"].get(metric) if metric != "step_time_ms" else r[metric]
                for r in recs
            ]
            values = [v for v in values if v is not None]
            row[metric] = (
                (float(np.mean(values)), float(np.std(values))) if values else None
            )
        rows.append(row)
    ref_name = group_name(reference) if reference is not None else None
    ref = next((r for r in rows if r["variant"] == ref_name), None)
    for row in rows:
        ratio = None
        if ref and ref["step_time_ms"] and row["step_time_ms"]:
            ratio = row["step_time_ms"][0] / ref["step_time_ms"][0]
        row["relative_step_time"] = ratio
    return rows


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, tuple):
        mean, std = value
        return f"{mean:.4f} ± {std:.4f}"
    return f"{value:.2f}"


def write_tables(
    rows: Sequence[dict],
    metrics: Sequence[str],
    workdir: str,
    *,
    sections: Sequence[str] = (),
    labels: Optional[Mapping[str, str]] = None,
) -> str:
    """Writes sweep.csv and sweep.md (the table, then `sections`); returns it.

    `labels` renames metric columns in the markdown (the CSV keeps the names).
    """
    columns = [*metrics, "step_time_ms", "relative_step_time"]
    with open(os.path.join(workdir, "sweep.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        head = ["variant", "seeds", "runs"]
        for c in columns:
            head += [f"{c}_mean", f"{c}_std"] if c != "relative_step_time" else [c]
        writer.writerow(head)
        for row in rows:
            line = [row["variant"], row["seeds"], row["runs"]]
            for c in columns:
                value = row[c]
                if c == "relative_step_time":
                    line.append("" if value is None else f"{value:.4f}")
                else:
                    line += ["", ""] if value is None else [f"{v:.6g}" for v in value]
            writer.writerow(line)
    table = markdown_table(rows, metrics, labels)
    text = "\n".join([*normalisation_lines(rows), table, *sections])
    with open(os.path.join(workdir, "sweep.md"), "w") as f:
        f.write(text)
    return text


def normalisation_lines(rows: Sequence[dict]) -> list[str]:
    """sweep.md's header lines: one per normalisation other than the default
    ("train"), naming the variants that used it (statistics.note)."""
    lines = []
    for mode in statistics.MODES:
        used = [r["variant"] for r in rows if mode in r.get("normalisation", ())]
        if used and mode != "train":
            which = "every variant" if len(used) == len(rows) else ", ".join(used)
            lines += [f"**{statistics.note(mode)}: {which}.**", ""]
    return lines


def markdown_table(
    rows: Sequence[dict],
    metrics: Sequence[str],
    labels: Optional[Mapping[str, str]] = None,
) -> str:
    """The rows as a markdown table: mean ± std of each metric."""
    columns = [*metrics, "step_time_ms", "relative_step_time"]
    labels = labels or {}
    header = ["variant", "seeds", "runs", *(labels.get(c, c) for c in columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["variant"], str(row["seeds"]), str(row["runs"])]
        cells += [_cell(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gallery_markdown(
    runs: Sequence[tuple[dict, str]], workdir: str, patterns: Sequence[str]
) -> str:
    """Links each variant's figures (of its first seed and fold) from `workdir`.

    Args:
      runs: (overrides, run dir) of every variant.
      workdir: the folder the markdown is written in (links are relative to it).
      patterns: glob patterns of figure files in a run folder, e.g. "tsne.png".
    """
    first: dict[str, str] = {}
    for overrides, run_dir in runs:
        first.setdefault(group_name(overrides), records(run_dir)[0]["dir"])
    out = []
    for name, run_dir in first.items():
        paths = [
            p
            for pattern in patterns
            for p in sorted(glob.glob(os.path.join(run_dir, pattern)))
        ]
        if not paths:
            continue
        where = os.path.relpath(run_dir, workdir)
        out.append(f"### {name} (`{where}`)\n")
        out += [
            f"![{name}: {os.path.basename(p)}]({os.path.relpath(p, workdir)})"
            for p in paths
        ]
        out.append("")
    return "\n".join(out)
