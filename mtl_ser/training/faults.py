"""Non-finite steps: the host side of the train step's guard.

The jitted step never applies a step whose loss or gradient is NaN/Inf and
records it in `state.faults` (see state.init_faults). At each log step the loop
reads that record here: under the "stop" policy (or beyond the allowed number
of skips) it writes a diagnostic and stops the run before anything is saved, so
neither the latest nor the best checkpoint ever holds a diverged state.
"""

import json
import os

import jax
import numpy as np


class NonFiniteError(FloatingPointError):
    """Training stopped on a non-finite loss or gradient."""


def check(faults, *, policy: str, max_skipped: int, describe):
    """Raises NonFiniteError when the run must stop; returns the skip count.

    Args:
      faults: the state's fault record (device or host arrays).
      policy: train.on_nonfinite, "stop" or "skip".
      max_skipped: train.max_skipped_steps ("skip" only).
      describe: () -> (diagnostic file path, message suffix); called only when
        stopping, to write the diagnostic.
    """
    faults = jax.device_get(faults)
    skipped, first = int(faults["skipped"]), int(faults["first_step"])
    if first < 0 or (policy == "skip" and skipped <= max_skipped):
        return skipped
    path, what = describe()
    reason = "" if policy == "stop" else f" ({skipped} non-finite steps skipped)"
    raise NonFiniteError(
        f"step {first}: non-finite {what}{reason}; training stopped with no "
        f"checkpoint of a diverged state (the latest and best checkpoints are "
        f"intact). Diagnostic: {path}"
    )


def what_went_wrong(faults, task_names) -> str:
    """'loss of task(s) a, b' or 'gradient (all task losses finite)'."""
    losses = np.asarray(jax.device_get(faults["first_losses"]))
    pairs = zip(task_names, losses, strict=True)
    bad = [name for name, x in pairs if not np.isfinite(x)]
    if bad:
        return f"loss of task(s) {', '.join(bad)}"
    return "gradient (all task losses finite)"


def write_diagnostic(workdir: str, state, *, task_names, batch_uids) -> str:
    """Writes `<workdir>/nonfinite_step<N>.json`; returns its path.

    It holds the step, the task losses and gradient norm of the first
    non-finite step, the utterance ids of its batch, the skip count, and the
    weighting method's parameters and state as they were before that step.
    """
    faults = jax.device_get(state.faults)
    step = int(faults["first_step"])
    record = {
        "step": step,
        "losses": dict(
            zip(task_names, map(_number, faults["first_losses"]), strict=True)
        ),
        "grad_norm": _number(faults["first_grad_norm"]),
        "skipped_steps": int(faults["skipped"]),
        "batch_uids": list(batch_uids),
        "weighting_params": _lists(state.params["weighting"]),
        "weighting_state": _lists(state.weighting_state),
    }
    path = os.path.join(workdir, f"nonfinite_step{step}.json")
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
    return path


def _number(x):
    x = float(x)
    return x if np.isfinite(x) else str(x)


def _lists(tree):
    """Arrays -> nested lists of JSON numbers (NaN/Inf as strings)."""

    def convert(x):
        x = np.asarray(jax.device_get(x), np.float64)
        return np.vectorize(_number, otypes=[object])(x).tolist() if x.size else []

    return jax.tree.map(convert, tree)
