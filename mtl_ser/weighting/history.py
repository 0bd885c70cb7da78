"""Per-epoch mean training losses, carried in a method's state (jnp, jit-safe).

Some methods are defined per epoch: DWA weights epoch e by the ratio of the
mean losses of epochs e-1 and e-2; GradNorm normalises by the mean loss of
epoch 0. LibMTL keeps these in the trainer's `train_loss_buffer[t, e]` (the
batch-size-weighted mean of task t's loss over epoch e, written when e ends).
Our batches all have the same size, so the plain mean is the same thing.

Epoch e covers steps [e * steps_per_epoch, (e + 1) * steps_per_epoch). A step
first calls `start_step` (which closes the previous epoch when `step` begins a
new one), reads the finished means, then calls `add` with its batch losses.
"""

import jax.numpy as jnp


def init(num_tasks: int, keep: int = 2) -> dict:
    """An empty history keeping the means of the last `keep` finished epochs."""
    return {
        "sum": jnp.zeros((num_tasks,), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
        "recent": jnp.zeros((keep, num_tasks), jnp.float32),  # Newest first.
        "first": jnp.zeros((num_tasks,), jnp.float32),  # Mean of epoch 0.
        "finished": jnp.zeros((), jnp.int32),  # Number of finished epochs.
    }


def epoch(step, steps_per_epoch: int):
    """The 0-based epoch index of `step`."""
    return jnp.asarray(step, jnp.int32) // steps_per_epoch


def start_step(history: dict, step, steps_per_epoch: int) -> dict:
    """Closes the running epoch if `step` is the first step of a new one."""
    step = jnp.asarray(step, jnp.int32)
    closes = (step > 0) & (step % steps_per_epoch == 0) & (history["count"] > 0)
    mean = history["sum"] / jnp.maximum(history["count"], 1).astype(jnp.float32)
    rolled = jnp.concatenate([mean[None], history["recent"][:-1]], axis=0)
    return {
        "sum": jnp.where(closes, 0.0, history["sum"]),
        "count": jnp.where(closes, 0, history["count"]),
        "recent": jnp.where(closes, rolled, history["recent"]),
        "first": jnp.where(closes & (history["finished"] == 0), mean, history["first"]),
        "finished": history["finished"] + closes.astype(jnp.int32),
    }


def add(history: dict, losses) -> dict:
    """Adds one batch's task losses [T] to the running epoch."""
    return {
        **history,
        "sum": history["sum"] + jnp.asarray(losses, jnp.float32),
        "count": history["count"] + 1,
    }
