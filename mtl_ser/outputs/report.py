"""The per-run report: a results table for stdout and `report.md`."""

import os

from mtl_ser.outputs import plots

HEADLINE = ("wa", "ua", "macro_f1", "macro_precision", "macro_recall", "mae", "ccc")


def _headline_rows(results: dict) -> list[tuple[str, str, str, float]]:
    """(split, task, metric, value) for the headline metrics, in a stable order."""
    rows = []
    for name, value in results["scalars"].items():
        split, metric, task = name.split("/")
        if metric in HEADLINE:
            rows.append((split, task, metric, value))
    order = {m: i for i, m in enumerate(HEADLINE)}
    return sorted(rows, key=lambda r: (r[0] != "val", r[1], order[r[2]]))


def results_table(results: dict) -> str:
    """A short plain-text table of the final validation and test metrics."""
    lines = [f"{'split':<6} {'task':<10} {'metric':<16} value"]
    for split, task, metric, value in _headline_rows(results):
        lines.append(f"{split:<6} {task:<10} {metric:<16} {value:.4f}")
    return "\n".join(lines)


def _confusion_markdown(matrix, classes) -> list[str]:
    head = "| true \\ predicted | " + " | ".join(classes) + " |"
    rule = "|---" * (len(classes) + 1) + "|"
    body = [
        f"| {c} | " + " | ".join(str(v) for v in row) + " |"
        for c, row in zip(classes, matrix, strict=True)
    ]
    return [head, rule, *body]


def write_report(workdir: str, config, results: dict) -> str:
    """Writes `<workdir>/report.md` and returns its path."""
    lines = [
        f"# Run report: {os.path.abspath(workdir)}",
        "",
        f"Corpus `{config.corpus.name}`, model `{config.model.name}` "
        f"(width {config.model.width}, {results['num_params']:,} parameters), "
        f"tasks `{config.tasks}`, weighting `{config.weighting.name}`, "
        f"{results['step']} steps; evaluated at step {results['best_step']} "
        f"(best `{config.train.best_metric}`). Metrics are utterance-level.",
        "",
        "| split | task | metric | value |",
        "|---|---|---|---|",
    ]
    for split, task, metric, value in _headline_rows(results):
        lines.append(f"| {split} | {task} | {metric} | {value:.4f} |")
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        plots.training_curves(
            plots.read_metrics(metrics_path),
            config.tasks.split(","),
            os.path.join(workdir, "curves.png"),
            title=f"weighting: {config.weighting.name}",
        )
        lines += ["", "## Training curves", "", "![Training curves](curves.png)"]
    for split, by_task in results["confusion"].items():
        for task, matrix in by_task.items():
            lines += ["", f"## Confusion matrix: {split}, {task}", ""]
            lines += _confusion_markdown(matrix, results["classes"][task])
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
