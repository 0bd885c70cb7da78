"""Sweeps: one base config, a list of overrides, one run folder per variant.

A sweep file in `configs/sweeps/` defines

  get_config(arg)  the base config (so `--config.x=y` flags still apply), and
  get_sweep(arg)   a list of override dicts, e.g. {"weighting.name": "mgda",
                   "seed": 1}; `product` builds the cross product of axes.

It may also define METRICS (the results.json scalars to tabulate, default
`DEFAULT_METRICS`) and REFERENCE (an override dict naming the variant whose
step time the others are compared with).

`launch.py --mode=sweep` runs the variants one after another in
`<workdir>/<variant name>`, skips the ones whose results.json exists (so an
interrupted sweep resumes where it stopped), and writes `sweep.csv` and
`sweep.md`: each metric's mean and standard deviation over seeds.
"""

import copy
import csv
import importlib.util
import itertools
import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

DEFAULT_METRICS = (
    "test/ua/emotion",
    "test/macro_f1/emotion",
    "test/wa/emotion",
)


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
    """A folder name from the overrides' last field names and values."""
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    name = ",".join(parts) or "base"
    return name.replace("/", "_").replace(" ", "")


def apply_overrides(config, overrides: Mapping[str, Any]):
    """A copy of `config` with dotted-field overrides; unknown fields raise."""
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in [*parents, leaf]:
            if part not in node:
                raise KeyError(f"sweep override {key!r}: no field {part!r}")
            if part != leaf:
                node = node[part]
        node[leaf] = value
    return config


def launch_commands(
    sweep_path: str, arg: Optional[str], workdir: str, variants: Sequence[dict]
) -> list[str]:
    """One `launch.py` command per variant, for any cluster scheduler."""
    config = f"{sweep_path}:{arg}" if arg else sweep_path
    commands = []
    for overrides in variants:
        flags = " ".join(f"--config.{k}={v}" for k, v in overrides.items())
        run_dir = os.path.join(workdir, variant_name(overrides))
        commands.append(
            f"python launch.py --config={config} --workdir={run_dir} {flags}".strip()
        )
    return commands


def run(
    config,
    variants: Sequence[dict],
    workdir: str,
    train_fn: Callable[[Any, str], Any],
) -> list[tuple[dict, str]]:
    """Runs every variant without results.json; returns (overrides, run dir)."""
    done = []
    for i, overrides in enumerate(variants):
        run_dir = os.path.join(workdir, variant_name(overrides))
        if os.path.exists(os.path.join(run_dir, "results.json")):
            print(f"[{i + 1}/{len(variants)}] {run_dir}: complete, skipped")
        else:
            print(f"[{i + 1}/{len(variants)}] {run_dir}", flush=True)
            train_fn(apply_overrides(config, overrides), run_dir)
        done.append((overrides, run_dir))
    return done


def _read_results(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def summarise(
    runs: Sequence[tuple[dict, str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    reference: Optional[Mapping[str, Any]] = None,
) -> list[dict]:
    """Groups runs over seeds; mean and std of each metric and the step time.

    Returns:
      One row per group: {"variant", "seeds", metric: (mean, std), ...,
      "step_time_ms": (mean, std), "relative_step_time": ratio or None}.
    """
    groups: dict[str, list[dict]] = {}
    keys: dict[str, dict] = {}
    for overrides, run_dir in runs:
        key_overrides = {k: v for k, v in overrides.items() if k != "seed"}
        name = variant_name(key_overrides)
        keys[name] = key_overrides
        groups.setdefault(name, []).append(_read_results(run_dir))
    rows = []
    for name, results in groups.items():
        row = {"variant": name, "seeds": len(results)}
        for metric in [*metrics, "step_time_ms"]:
            values = [
                r["scalars"].get(metric) if metric != "step_time_ms" else r.get(metric)
                for r in results
            ]
            values = [v for v in values if v is not None]
            row[metric] = (
                (float(np.mean(values)), float(np.std(values))) if values else None
            )
        rows.append(row)
    ref_name = variant_name(reference) if reference is not None else None
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


def write_tables(rows: Sequence[dict], metrics: Sequence[str], workdir: str):
    """Writes sweep.csv and sweep.md; returns the markdown text."""
    columns = [*metrics, "step_time_ms", "relative_step_time"]
    with open(os.path.join(workdir, "sweep.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        head = ["variant", "seeds"]
        for c in columns:
            head += [f"{c}_mean", f"{c}_std"] if c != "relative_step_time" else [c]
        writer.writerow(head)
        for row in rows:
            line = [row["variant"], row["seeds"]]
            for c in columns:
                value = row[c]
                if c == "relative_step_time":
                    line.append("" if value is None else f"{value:.4f}")
                else:
                    line += ["", ""] if value is None else [f"{v:.6g}" for v in value]
            writer.writerow(line)
    header = ["variant", "seeds", *columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["variant"], str(row["seeds"])] + [_cell(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(workdir, "sweep.md"), "w") as f:
        f.write(text)
    return text
