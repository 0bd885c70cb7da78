"""Metrics to JSONL (always) and TensorBoard (optional), from process 0 only."""

import json
import math
import os

import jax


class MetricWriter:
    """Writes `{"step": s, name: value, ...}` lines to `<workdir>/metrics.jsonl`."""

    def __init__(self, workdir: str, *, tensorboard: bool):
        self.active = jax.process_index() == 0
        self._tb = None
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
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


def _json_number(value: float):
    return value if math.isfinite(value) else str(value)
