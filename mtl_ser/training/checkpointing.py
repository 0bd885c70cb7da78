"""Orbax checkpoints: the latest states (for resume) and the best one.

`<workdir>/checkpoints/<step>/` holds the train state, this process's Grain
iterator state and the config; `<workdir>/best/<step>/` the state with the best
validation metric. Orbax writes each to a temporary name and commits it
atomically, so a checkpoint interrupted mid-write is never restored.
"""

import os

import grain
import orbax.checkpoint as ocp


def _barriers(name: str):
    # Both managers save step s at an evaluation step (best, then latest), and
    # Orbax names its cross-process barriers after the step: without distinct
    # prefixes the two saves collide in a multi-process run and both fail.
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


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
        restored = self.latest.restore(
            self.latest.latest_step(),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(state),
                data_iter=grain.checkpoint.CheckpointRestore(data_iter),
            ),
        )
        return restored.state

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
        restored = self.best.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(state))
        )
        return restored.state

    def wait(self):
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self):
        self.latest.close()
        self.best.close()
