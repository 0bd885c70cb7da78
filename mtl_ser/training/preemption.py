"""SIGTERM and SIGINT: save a checkpoint at the next step boundary, then exit.

The loop asks `StopRequests.requested(step)` after every step. One process
records the signal itself; a second signal of the same kind acts as it would
without us (SIGINT raises KeyboardInterrupt, SIGTERM terminates), so a stuck
run can still be stopped. On several processes the signal may reach only some
of them, and all must save at the same step: there JAX's preemption sync point
(set up by jax.distributed.initialize, which handles SIGTERM itself) decides,
and SIGINT keeps its usual meaning.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils

# The exit status of a run stopped by a signal after saving: run the same
# command again to resume (75 is EX_TEMPFAIL, "try again later").
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """The run saved a checkpoint at `step` and stopped on a signal."""

    def __init__(self, step: int, why: str):
        super().__init__(
            f"{why}: saved a checkpoint at step {step} and stopped; run the same "
            "command again to resume"
        )
        self.step = step


class StopRequests:
    """Records SIGTERM/SIGINT while active (a context manager)."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # Only the main thread may handle signals.
        if jax.process_count() > 1:
            return self  # JAX's preemption sync point handles SIGTERM.
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # The second one: do as usual.
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        print(
            f"{self.signal_name} received: saving at the next step boundary "
            "(send it again to stop at once)",
            flush=True,
        )

    def requested(self, step: int) -> "str | None":
        """The reason to stop after `step`, or None (call it at every step)."""
        if jax.process_count() > 1:
            if multihost_utils.reached_preemption_sync_point(step):
                return "preemption notice (SIGTERM)"
            return None
        return self.signal_name
