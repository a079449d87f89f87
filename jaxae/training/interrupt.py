"""Stopping gracefully: a signal ends training after the chunk in flight, with a checkpoint."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class StopRequest:
    """While training, SIGINT and SIGTERM only set ``requested``: the loop stops after the
    chunk in flight, so the state it checkpoints is whole (a signal landing inside a
    dispatched call would otherwise lose the call's donated input state). A second signal
    interrupts at once. Handlers are installed only in the main thread; ``restore`` puts
    the previous ones back."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after the current steps (signal %d); signal again to stop at once", signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def save_on_interrupt(checkpointer, state) -> None:
    """Checkpoints ``state`` at its own step when training is interrupted, unless that step is
    already saved. The state is whole: a step's arrays are replaced only when it finished."""
    try:
        step = int(state.step)
        if step not in checkpointer.steps():
            checkpointer.save(step, state)
        checkpointer.wait()
        log.warning("interrupted: saved a checkpoint at step %d in %s; rerun the same command to resume",
                    step, checkpointer.directory)
    except Exception as e:  # e.g. buffers donated to a call that was cut short.
        log.warning("interrupted: could not checkpoint the current step (%s: %s); the last periodic "
                    "checkpoint stands", type(e).__name__, str(e)[:200])
