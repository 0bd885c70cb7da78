"""Orbax checkpoints: the latest states (for resume) and the best one.

`<workdir>/checkpoints/<step>/` holds the train state, this process's Grain
iterator state and the config; `<workdir>/best/<step>/` the state with the best
validation metric. Orbax writes each to a temporary name and commits it
atomically, so a checkpoint interrupted mid-write is never restored.
"""

import dataclasses
import os
from typing import Any

import grain
import orbax.checkpoint as ocp
from flax import struct


def _barriers(name: str):
    # Both managers save step s at an evaluation step (best, then latest), and
    # Orbax names its cross-process barriers after the step: without distinct
    # prefixes the two saves collide in a multi-process run and both fail.
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


class _StateBeforeEma(struct.PyTreeNode):
    """TrainState as checkpoints wrote it before it had `ema`."""

    step: Any
    params: Any
    batch_stats: Any
    opt_state: Any
    weighting_state: Any
    rng: Any
    faults: Any


def restore_state(manager, step: int, state, **other_items):
    """Restores checkpoint `step` of `manager` shaped and sharded as `state`.

    Other items of the checkpoint (e.g. data_iter=CheckpointRestore(...)) are
    restored alongside. A state without moving averages (ema None) also reads
    checkpoints written before TrainState had them.

    Returns:
      (restored state, the restored Composite).
    """

    def restore(target):
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), **other_items)
        return manager.restore(step, args=args)

    try:
        restored = restore(state)
        return restored.state, restored
    except ValueError as error:
        if state.ema is not None or "ema" not in str(error):
            raise
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    del fields["ema"]
    restored = restore(_StateBeforeEma(**fields))
    old = restored.state
    return state.replace(**{k: getattr(old, k) for k in fields}), restored


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a finished checkpoint, latest or best.

    Reads the folders only (a Checkpointer would create them): Orbax names a
    finished checkpoint by its step, and one in progress otherwise.
    """
    for folder in ("checkpoints", "best"):
        path = os.path.join(workdir, folder)
        if os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path)):
            return True
    return False


class Checkpointer:
    """The two checkpoint managers of a run."""

    def __init__(self, workdir: str, *, keep: int, best_metric: str):
        workdir = os.path.abspath(workdir)
        self.best_metric = best_metric
        self._best_value = None  # Cached; read from disk on first use.
        self.latest = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                multiprocessing_options=_barriers("latest"),
            ),
        )
        self.best = ocp.CheckpointManager(
            os.path.join(workdir, "best"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[best_metric],
                best_mode="max",
                create=True,
                multiprocessing_options=_barriers("best"),
            ),
        )

    def latest_step(self):
        return self.latest.latest_step()

    def save_latest(self, step: int, state, data_iter, config: dict):
        self.latest.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=grain.checkpoint.CheckpointSave(data_iter),
                config=ocp.args.JsonSave(config),
            ),
        )

    def restore_latest(self, state, data_iter):
        """Restores the latest state (shaped and sharded like `state`) and,
        in place, the data iterator's position."""
        state, _ = restore_state(
            self.latest,
            self.latest.latest_step(),
            state,
            data_iter=grain.checkpoint.CheckpointRestore(data_iter),
        )
        return state

    def best_value(self):
        """The best validation metric saved so far, or None."""
        if self._best_value is None and self.best.best_step() is not None:
            metrics = self.best.metrics(self.best.best_step()) or {}
            self._best_value = metrics.get(self.best_metric)
        return self._best_value

    def save_best(self, step: int, state, metrics: dict) -> bool:
        """Saves `state` if `metrics[best_metric]` beats the best so far."""
        value, best = float(metrics[self.best_metric]), self.best_value()
        if best is not None and value <= best:
            return False
        self.best.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
            metrics={self.best_metric: value},
        )
        self._best_value = value
        return True

    def restore_best(self, state):
        """The best state, or None if no evaluation ran yet."""
        step = self.best.best_step()
        if step is None:
            return None
        return restore_state(self.best, step, state)[0]

    def wait(self):
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self):
        self.latest.close()
        self.best.close()
