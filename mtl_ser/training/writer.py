"""Metrics to JSONL (always) and TensorBoard (optional), from process 0 only."""

import json
import math
import os

import jax


class MetricWriter:
    """Writes `{"step": s, name: value, ...}` lines to `<workdir>/metrics.jsonl`."""

    def __init__(self, workdir: str, *, tensorboard: bool, after_step=None):
        """Appends to metrics.jsonl; `after_step` first drops lines past it.

        A resumed run passes the step it resumed from, so that the steps a
        killed session ran past its last checkpoint are not listed twice.
        """
        self.active = jax.process_index() == 0
        self._tb = None
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if after_step is not None and os.path.exists(path):
            _truncate_after(path, after_step)
        self._jsonl = open(path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter  # Imported only when used.

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict):
        if not self.active:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        line = {"step": int(step), **{k: _json_number(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(line) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, int(step))

    def close(self):
        if not self.active:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _truncate_after(path: str, step: int):
    """Rewrites a metrics.jsonl without its lines past `step` (atomically)."""
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            pass  # A line cut short by a kill.
    if len(kept) == len(lines):
        return
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def _json_number(value: float):
    return value if math.isfinite(value) else str(value)
