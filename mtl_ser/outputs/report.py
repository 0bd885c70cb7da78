"""The per-run report: a results table for stdout and `report.md`.

report.md reads on its own: the run, the headline metrics, and (with
report.figures) the training curves, the confusion matrices as PNGs beside
their tables, and from analysis.npz a t-SNE of the test embeddings and one
Grad-CAM figure per class, each with a sentence on what it shows. Every PNG is
written into the workdir and linked by its file name.
"""

import os
import re

import numpy as np

from mtl_ser.data import statistics
from mtl_ser.outputs import plots
from mtl_ser.training import analysis

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
    """A short plain-text table of the final validation and test metrics,
    under a line naming a normalisation other than the default."""
    lines = [f"{'split':<6} {'task':<10} {'metric':<16} value"]
    note = statistics.note(results.get("normalisation", "train"))
    lines = [note, *lines] if note else lines
    for split, task, metric, value in _headline_rows(results):
        lines.append(f"{split:<6} {task:<10} {metric:<16} {value:.4f}")
    return "\n".join(lines)


def confusion_markdown(matrix, classes) -> list[str]:
    """A confusion matrix as markdown table lines, rows true, columns predicted."""
    head = "| true \\ predicted | " + " | ".join(classes) + " |"
    rule = "|---" * (len(classes) + 1) + "|"
    body = [
        f"| {c} | " + " | ".join(str(v) for v in row) + " |"
        for c, row in zip(classes, matrix, strict=True)
    ]
    return [head, rule, *body]


def file_part(name: str) -> str:
    """`name` made safe for a file name (and a markdown link)."""
    return re.sub(r"[^\w.-]", "_", name)


CONFUSION_SENTENCE = (
    "Left, how many utterances of each true class (row) the model predicted as "
    "each class (column); right, each row divided by its total, so the diagonal "
    "is each class's recall and UA is the diagonal's mean."
)


def _curves(workdir, config) -> list[str]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    tasks = config.tasks.split(",")
    plots.training_curves(
        plots.read_metrics(path),
        tasks,
        os.path.join(workdir, "curves.png"),
        title=f"weighting: {config.weighting.name}" if len(tasks) > 1 else "",
    )
    weights = "the weight the method gave each task; " if len(tasks) > 1 else ""
    text = (
        "Each task's training loss (solid) and validation loss (dashed: the "
        "utterance-level cross-entropy, or squared error in label units), each "
        f"relative to its first logged value; {weights}for gradient methods the "
        "cosines between task gradients; the learning rate; and the training "
        "throughput, over the steps."
    )
    if len(tasks) > 1 and config.weighting.name == "uncertainty":
        text += (
            " The weighted total (`train/loss/total` in metrics.jsonl and the "
            "progress bar) can be negative: uncertainty weighting adds half of "
            "each task's learned log-variance s, which goes below zero as the "
            "method weighs that task up; the task losses, all positive, are "
            "what compares across runs (uncertainty_revised's regulariser "
            "stays positive)."
        )
    return ["", "## Training curves", "", text, "", "![Training curves](curves.png)"]


def _confusions(workdir, results, figures: bool) -> list[str]:
    lines = []
    for split, by_task in results["confusion"].items():
        for task, matrix in by_task.items():
            classes = results["classes"][task]
            lines += ["", f"## Confusion matrix: {split}, {task}", ""]
            if figures:
                name = f"confusion_{file_part(split)}_{file_part(task)}.png"
                plots.confusion(
                    matrix,
                    classes,
                    os.path.join(workdir, name),
                    title=f"{task}, {split} split",
                )
                lines += [CONFUSION_SENTENCE, "", f"![{task}, {split}]({name})", ""]
            lines += confusion_markdown(matrix, classes)
    return lines


def _tsne(workdir, config, arrays) -> list[str]:
    embedding = arrays["embedding"]
    if len(embedding) < 3:
        return []
    points = plots.tsne_points(embedding, config.report.tsne_perplexity, config.seed)
    colourings = []
    if "label" in arrays:
        names = np.append(arrays["classes"], "(unlabelled)")  # label -1: last.
        colourings.append((f"coloured by {arrays['task']}", names[arrays["label"]]))
    if (arrays["gender"] != "").any():
        gender = np.where(arrays["gender"] == "", "(unknown)", arrays["gender"])
        colourings.append(("coloured by gender", gender))
        second = "gender"
    else:
        colourings.append(("coloured by speaker", arrays["speaker"]))
        second = "speaker"
    plots.tsne(points, colourings, os.path.join(workdir, "tsne.png"))
    first = f"its true {arrays['task']} (left) and " if "label" in arrays else ""
    return [
        "",
        "## t-SNE of the test embeddings",
        "",
        f"The trunk's embeddings of the {len(embedding)} test utterances (each "
        "averaged over the utterance's windows) laid out in 2-D by t-SNE, each "
        f"point coloured by {first}its {second}: utterances the shared "
        "representation finds alike lie close together.",
        "",
        "![t-SNE of the test embeddings](tsne.png)",
    ]


def _gradcam(workdir, config, arrays) -> list[str]:
    classes, task = arrays.get("classes"), arrays.get("task")
    if classes is None or not len(arrays["cam_class"]):
        return []
    lines = [
        "",
        "## Grad-CAM",
        "",
        "Per class, the test utterances of that true class that the model "
        "classifies correctly with the highest probability (if too few are "
        "correct, the most probable others), on their centre window of "
        f"{config.data.crop_frames} frames.",
    ]
    for c, name in enumerate(classes):
        rows = np.flatnonzero(arrays["cam_class"] == c)
        if not len(rows):
            continue
        titles = [
            f"{arrays['cam_uid'][k]}: true {name}, predicted "
            f"{classes[arrays['cam_pred'][k]]} (p = {arrays['cam_prob'][k]:.2f})"
            for k in rows
        ]
        file = f"gradcam_{file_part(str(name))}.png"
        plots.gradcam(
            arrays["cam_logmel"][rows],
            arrays["cam_map"][rows],
            titles,
            os.path.join(workdir, file),
            frame_seconds=config.features.hop_length / config.features.sample_rate,
            title=f"Grad-CAM of {task} class {name}",
        )
        correct = int((arrays["cam_pred"][rows] == c).sum())
        lines += [
            "",
            f"### {name}",
            "",
            f"Where in time and mel frequency the last conv layer's evidence for "
            f"{name} lies (red: most) in {len(rows)} test utterance(s) of true "
            f"class {name}, {correct} of them predicted {name}: the spectrogram "
            "left, the Grad-CAM map over it right.",
            "",
            f"![Grad-CAM, {name}]({file})",
        ]
    return lines


def _evaluated(config, results: dict) -> str:
    """Which state the final evaluation used, in words."""
    if results["best_step"] is None:
        return f"the last step ({results['step']})"
    return f"step {results['best_step']} (best `{config.train.best_metric}`)"


def _normalisation_lines(results: dict) -> list[str]:
    """report.md's line on a normalisation other than the default, or none."""
    note = statistics.note(results.get("normalisation", "train"))
    return [f"**{note}.**", ""] if note else []


def write_report(workdir: str, config, results: dict) -> str:
    """Writes `<workdir>/report.md` (and its PNGs) and returns its path."""
    lines = [
        f"# Run report: {os.path.abspath(workdir)}",
        "",
        f"Corpus `{config.corpus.name}`, model `{config.model.name}` "
        f"(width {config.model.width}, {results['num_params']:,} parameters), "
        f"tasks `{config.tasks}`, weighting `{config.weighting.name}`, "
        f"{results['step']} steps; evaluated at {_evaluated(config, results)}. "
        "Metrics are utterance-level.",
        "",
        *_normalisation_lines(results),
        "| split | task | metric | value |",
        "|---|---|---|---|",
    ]
    for split, task, metric, value in _headline_rows(results):
        lines.append(f"| {split} | {task} | {metric} | {value:.4f} |")
    figures = config.report.figures
    if figures:
        lines += _curves(workdir, config)
    lines += _confusions(workdir, results, figures)
    analysis_path = os.path.join(workdir, analysis.FILENAME)
    if figures and os.path.exists(analysis_path):
        arrays = analysis.load(analysis_path)
        lines += _tsne(workdir, config, arrays)
        lines += _gradcam(workdir, config, arrays)
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
