"""Orbax checkpoints of a pytree (the train state) in ``<workdir>/checkpoints/<step>/``.

An Orbax ``CheckpointManager`` writes each
checkpoint into a temporary folder and renames it when complete, so a crash never
leaves a checkpoint that looks finished. Checkpoints hold arrays only; nothing is
ever unpickled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"

log = logging.getLogger(__name__)


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


class Checkpointer:
    """Saves and restores a train-state pytree in ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, create: bool = True):
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save; call :meth:`wait` before relying on it."""
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def restore(self, target: Any) -> tuple[int, Any] | None:
        """Restores the newest readable checkpoint into the structure of ``target``.

        Returns (step, state), or None when there is no checkpoint. A checkpoint that
        fails to restore (corrupted or partial) is skipped with a warning naming it,
        and the previous one is tried.
        """
        for step in reversed(self.steps()):
            try:
                return step, self._restore(step, target)
            except Exception as e:  # Orbax raises various types for damaged files.
                log.warning("checkpoint %s is unreadable (%s: %s); trying an older one",
                            os.path.join(self.directory, str(step)), type(e).__name__, str(e)[:200])
        return None

    def _restore(self, step: int, target: Any) -> Any:
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(target))
        except ValueError:
            # Checkpoints written before a dataclass state gained an optional field (e.g.
            # TrainState.ema_params) lack it: restore the other fields, keep the None.
            present = _present_fields(target)
            if present is None:
                raise
            restored = self._manager.restore(step, args=ocp.args.StandardRestore(present))
            return dataclasses.replace(target, **restored)

    def close(self) -> None:
        self._manager.close()


def _present_fields(target: Any) -> dict | None:
    """A dataclass state's non-None fields as a dict, or None when it has no None field."""
    if not dataclasses.is_dataclass(target):
        return None
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    present = {name: value for name, value in fields.items() if value is not None}
    return present if len(present) < len(fields) else None
