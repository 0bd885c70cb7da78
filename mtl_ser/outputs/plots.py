"""The report's figures (matplotlib, PNG): curves, confusion, t-SNE, Grad-CAM, CV.

Training curves: the paper's claim for automatic weighting is that the tasks'
errors fall "uniformly and simultaneously". The first panel shows each task's
training loss (solid) and validation loss (dashed, evaluate.utterance_loss),
each relative to its first logged value, so tasks on different scales share
one axis; the second the weight the method gave each task (multitask runs);
for gradient-based methods, the cosine between each pair of task gradients;
then the learning rate and the training throughput. Legends sit beside the
axes, off the data.
"""

import json
import os
from typing import Sequence

import numpy as np

Series = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (steps, values)


def read_metrics(path: str) -> Series:
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


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    plt = _pyplot()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _legend(ax, fontsize: int = 7):
    """A legend beside the axes, off the data (tight_layout makes room)."""
    ax.legend(
        fontsize=fontsize,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )


def _relative(values: np.ndarray) -> np.ndarray:
    """Values over the first one (unchanged where that is 0)."""
    return values / values[0] if values.size and values[0] != 0 else values


def _loss_panel(ax, series: Series, task_names: Sequence[str]):
    for i, task in enumerate(task_names):
        colour = f"C{i % 10}"
        if f"train/loss/{task}" in series:
            steps, values = series[f"train/loss/{task}"]
            ax.plot(steps, _relative(values), color=colour, label=task)
        if f"val/loss/{task}" in series:
            steps, values = series[f"val/loss/{task}"]
            ax.plot(steps, _relative(values), "--o", color=colour, markersize=3)
    ax.set(
        xlabel="step",
        ylabel="loss / first logged",
        title="Task losses (solid train, dashed val)",
    )
    _legend(ax)


def _weight_panel(ax, series: Series, task_names: Sequence[str]):
    names = [f"train/weight/{t}" for t in task_names if f"train/weight/{t}" in series]
    for name in names:
        ax.plot(*series[name], label=name.split("/")[-1])
    ax.set(xlabel="step", ylabel="weight", title="Task weights")
    magnitudes = np.abs(np.concatenate([series[n][1] for n in names] or [[]]))
    magnitudes = magnitudes[magnitudes > 0]
    if magnitudes.size and magnitudes.max() > 100 * magnitudes.min():
        # Weights spanning orders of magnitude (e.g. DB-MTL scaling a solved
        # task's vanishing gradient) would flatten every other line.
        ax.set_yscale("symlog", linthresh=float(magnitudes.min()))
    _legend(ax)


def _cosine_panel(ax, series: Series, task_names: Sequence[str]):
    for name in sorted(k for k in series if k.startswith("train/grad_cos/")):
        ax.plot(*series[name], label=name.split("/")[-1])
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="step", ylabel="cosine", title="Task-gradient cosines", ylim=(-1, 1))
    _legend(ax, fontsize=6)


def _lr_panel(ax, series: Series, task_names: Sequence[str]):
    ax.plot(*series["train/lr"])
    ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def _throughput_panel(ax, series: Series, task_names: Sequence[str]):
    ax.plot(*series["train/samples_per_sec"], marker=".")
    ax.set(
        xlabel="step",
        ylabel="samples / s",
        title="Throughput (the first point holds compilation)",
    )
    ax.set_ylim(bottom=0)


def training_curves(
    series: Series, task_names: Sequence[str], path: str, title: str = ""
) -> str:
    """Draws the curves (see the module docstring) into a PNG; returns the path.

    A single-task run has no weights panel: one task's weight says nothing.
    """
    panels = [_loss_panel]
    if len(task_names) > 1:
        panels.append(_weight_panel)
    if any(k.startswith("train/grad_cos/") for k in series):
        panels.append(_cosine_panel)
    if "train/lr" in series:
        panels.append(_lr_panel)
    if "train/samples_per_sec" in series:
        panels.append(_throughput_panel)
    cols = min(len(panels), 2 if len(panels) in (2, 4) else 3)
    rows = -(-len(panels) // cols)
    fig, axes = _pyplot().subplots(
        rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for draw, ax in zip(panels, axes.flat, strict=False):  # Spare axes: off.
        draw(ax, series, task_names)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def row_normalised(matrix) -> np.ndarray:
    """Each row of a confusion matrix over its sum (0 for an empty row)."""
    counts = np.asarray(matrix, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(totals, 1.0)


def confusion(matrix, classes: Sequence[str], path: str, title: str = "") -> str:
    """Counts and row-normalised confusion side by side, into a PNG at `path`.

    Args:
      matrix: [C, C] counts, [true][predicted].
      classes: the C class names.
      path: the PNG to write.
      title: the figure's title.
    """
    counts = np.asarray(matrix, np.int64)
    size = 1.8 + 0.55 * len(classes)
    fig, axes = _pyplot().subplots(1, 2, figsize=(2 * size, size + 0.4))
    for ax, values, name in (
        (axes[0], counts, "counts"),
        (axes[1], row_normalised(counts), "row-normalised (recall)"),
    ):
        top = max(float(values.max()), 1e-12)
        ax.imshow(values, cmap="Blues", vmin=0, vmax=top)
        for (t, p), v in np.ndenumerate(values):
            text = f"{v:d}" if values.dtype.kind == "i" else f"{v:.2f}"
            colour = "white" if v > top / 2 else "black"
            ax.text(p, t, text, ha="center", va="center", color=colour, fontsize=8)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, classes, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title=name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def tsne_points(embedding: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """scikit-learn's 2-D t-SNE of [N, D] embeddings (N >= 3): [N, 2].

    The perplexity is lowered to (N - 1) / 3 for small N: TSNE needs it below
    N, and each point's neighbourhood is about 3 perplexities wide.
    """
    import threadpoolctl
    from sklearn.manifold import TSNE

    n = len(embedding)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 utterances, got {n}")
    # PCA initialisation divides by the spread of the points: none if all equal.
    spread = np.ptp(embedding, axis=0).max() > 0
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3),
        init="pca" if spread else "random",
        random_state=seed,
    )
    # One OpenMP thread: on a busy CPU (XLA's threads, pytest -n 2) sklearn's
    # threads wait on each other and the same fit took 20-50 times longer.
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(np.asarray(embedding, np.float64))


def tsne(
    points: np.ndarray,
    colourings: Sequence[tuple[str, np.ndarray]],
    path: str,
    title: str = "",
) -> str:
    """Scatter plots of 2-D points, one panel per colouring.

    Args:
      points: [N, 2].
      colourings: (panel title, [N] category names) pairs.
      path: the PNG to write.
      title: the figure's title.
    """
    fig, axes = _pyplot().subplots(
        1, len(colourings), figsize=(5 * len(colourings), 4.4), squeeze=False
    )
    for ax, (name, categories) in zip(axes[0], colourings, strict=True):
        categories = np.asarray(categories)
        for i, value in enumerate(dict.fromkeys(categories.tolist())):
            at = categories == value
            colour = f"C{i % 10}" if i < 10 else _pyplot().cm.tab20(i % 20)
            ax.scatter(*points[at].T, s=14, color=colour, label=value)
        ax.set(title=name, xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=1.2, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def gradcam(
    logmel: np.ndarray,
    maps: np.ndarray,
    titles: Sequence[str],
    path: str,
    *,
    frame_seconds: float,
    title: str = "",
) -> str:
    """Log-mel windows and their Grad-CAM maps, one row per window.

    Left the spectrogram (titled with the row's title), right the same in
    grey under the map (scaled to its maximum); time on x, mel band on y.

    Args:
      logmel: [K, T, F] log-mel windows (dB).
      maps: [K, T, F] Grad-CAM maps (>= 0).
      titles: K row titles.
      path: the PNG to write.
      frame_seconds: seconds per frame (hop length / sample rate).
      title: the figure's title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(logmel), 2, figsize=(12, 3.2 * len(logmel)), squeeze=False
    )
    for row, spectrogram, heat, name in zip(axes, logmel, maps, titles, strict=True):
        extent = (0.0, len(spectrogram) * frame_seconds, 0, spectrogram.shape[1])
        shown = dict(origin="lower", aspect="auto", extent=extent)
        image = row[0].imshow(spectrogram.T, cmap="magma", **shown)
        fig.colorbar(image, ax=row[0], label="dB")
        row[0].set(title=name, xlabel="time (s)", ylabel="mel band")
        row[1].imshow(spectrogram.T, cmap="gray", **shown)
        scaled = heat / heat.max() if heat.max() > 0 else heat
        image = row[1].imshow(scaled.T, cmap="jet", alpha=0.5, vmin=0, vmax=1, **shown)
        fig.colorbar(image, ax=row[1], label="Grad-CAM / max")
        row[1].set(title="Grad-CAM map over the log-mel", xlabel="time (s)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def fold_bars(
    folds: Sequence[str], values: Sequence[float], path: str, *, metric: str
) -> str:
    """One bar per fold, with the mean and mean +- std as lines.

    Args:
      folds: fold names.
      values: the metric per fold.
      path: the PNG to write.
      metric: the metric's name, e.g. "UA of emotion".
    """
    values = np.asarray(values, np.float64)
    mean, std = values.mean(), values.std()
    fig, ax = _pyplot().subplots(figsize=(max(4.5, 0.6 * len(folds) + 2), 3.6))
    ax.bar(np.arange(len(folds)), values, color="C0", alpha=0.8)
    ax.axhline(mean, color="C3", label=f"mean {mean:.3f}")
    for bound in (mean - std, mean + std):
        ax.axhline(bound, color="C3", linestyle="--", linewidth=0.9)
    ax.plot([], [], "--", color="C3", label=f"mean ± std ({std:.3f})")
    ax.set_xticks(np.arange(len(folds)), folds, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} per fold")
    ax.set_ylim(min(0.0, values.min()), max(1.0, values.max()))
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
