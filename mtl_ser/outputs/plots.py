"""Training curves from metrics.jsonl: per-task losses, task weights, cosines.

The paper's claim for automatic weighting is that the tasks' errors fall
"uniformly and simultaneously". The first panel shows each task's training
loss relative to its first logged value, so tasks on different scales share
one axis; the second the weight the method gave each task; the third, for
gradient-based methods, the cosine between each pair of task gradients.
"""

import json
import os
from typing import Sequence

import numpy as np


def read_metrics(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads metrics.jsonl into name -> (steps, values), sorted by step.

    A resumed run re-logs the steps after its last checkpoint; the line
    written last wins.
    """
    by_name: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
            step = int(record.pop("step"))
            for name, value in record.items():
                if isinstance(value, (int, float)):
                    by_name.setdefault(name, {})[step] = float(value)
    series = {}
    for name, points in by_name.items():
        steps = np.array(sorted(points))
        series[name] = (steps, np.array([points[s] for s in steps]))
    return series


def _relative(values: np.ndarray) -> np.ndarray:
    """Values over the first one (unchanged where that is 0)."""
    return values / values[0] if values.size and values[0] != 0 else values


def training_curves(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    task_names: Sequence[str],
    path: str,
    title: str = "",
) -> str:
    """Draws the curves into a PNG at `path`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cosines = sorted(k for k in series if k.startswith("train/grad_cos/"))
    panels = 3 if cosines else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    loss_ax, weight_ax = axes[0, 0], axes[0, 1]
    for task in task_names:
        if f"train/loss/{task}" in series:
            steps, values = series[f"train/loss/{task}"]
            loss_ax.plot(steps, _relative(values), label=task)
        if f"train/weight/{task}" in series:
            steps, values = series[f"train/weight/{task}"]
            weight_ax.plot(steps, values, label=task)
    loss_ax.set(
        xlabel="step", ylabel="training loss / first logged", title="Task losses"
    )
    weight_ax.set(xlabel="step", ylabel="weight", title="Task weights")
    weights = [
        series[f"train/weight/{t}"][1]
        for t in task_names
        if f"train/weight/{t}" in series
    ]
    magnitudes = np.abs(np.concatenate(weights)) if weights else np.zeros(0)
    magnitudes = magnitudes[magnitudes > 0]
    if magnitudes.size and magnitudes.max() > 100 * magnitudes.min():
        # Weights spanning orders of magnitude (e.g. DB-MTL scaling a solved
        # task's vanishing gradient) would flatten every other line.
        weight_ax.set_yscale("symlog", linthresh=float(magnitudes.min()))
    if cosines:
        cos_ax = axes[0, 2]
        for name in cosines:
            steps, values = series[name]
            cos_ax.plot(steps, values, label=name.split("/")[-1])
        cos_ax.axhline(0.0, color="grey", linewidth=0.8)
        cos_ax.set(
            xlabel="step", ylabel="cosine", title="Task-gradient cosines", ylim=(-1, 1)
        )
        cos_ax.legend(fontsize=6)
    loss_ax.legend(fontsize=7)
    weight_ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
