"""Orbax checkpoints of a pytree (the train state) in ``<workdir>/checkpoints/<step>/``.

An Orbax ``CheckpointManager`` writes each
checkpoint into a temporary folder and renames it when complete, so a crash never
leaves a checkpoint that looks finished. Checkpoints hold arrays only; nothing is
ever unpickled.

A save that cannot be written (full disk, quota, read-only file system) is raised as one
:class:`jaxae.errors.WriteError` naming the folder and the reason, and older checkpoints
stay intact (Orbax deletes an old step only after a newer one is complete). A save is
refused before it starts when the file system has less free space than the state's size;
a disk that fills up during the write is caught when the save is waited for. The
tracebacks Orbax and asyncio log from background threads about that same failure are
held back, since the WriteError reports it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxae import io
from jaxae.errors import WriteError

CHECKPOINT_DIR = "checkpoints"
SPACE_MARGIN = 1 << 20  # Bytes of metadata and index files a checkpoint needs beyond its arrays.

log = logging.getLogger(__name__)


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


class _HeldErrors(logging.Filter):
    """Holds back the error records Orbax logs (with tracebacks, from background threads):
    the failure they describe reaches the caller as one WriteError instead."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname or record.name == "asyncio"
        if record.levelno >= logging.ERROR and from_orbax:
            self.records.append(record)
            return False
        return True


def _quiet_closed_loops(previous: Callable) -> Callable:
    """A sys.unraisablehook that drops "Event loop is closed" (TensorStore's callbacks for the
    fragments of a failed save, arriving after Orbax closed its loop) and passes the rest on."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    return hook


def _handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's pytree handler (the format of its StandardSave) with jax.Arrays written without
    replica parallelism: that splits a replicated array's write across its devices, slicing
    every array once per device, an eagerly compiled program per leaf and device (seconds
    for a small model on the 4 test devices) to speed up writes of large arrays on many hosts."""
    handlers = ocp.type_handlers
    registry = handlers.create_type_handler_registry(
        (int, handlers.ScalarHandler()), (float, handlers.ScalarHandler()), (np.number, handlers.ScalarHandler()),
        (np.ndarray, handlers.NumpyHandler()), (jax.Array, handlers.ArrayHandler(use_replica_parallel=False)))
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _restore_args(target: Any) -> ocp.args.PyTreeRestore:
    """Restores into ``target``'s structure, dtypes and shardings."""
    return ocp.args.PyTreeRestore(target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))


def state_bytes(state: Any) -> int:
    """Bytes of the arrays in ``state`` (what a checkpoint of it stores, before compression)."""
    return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(state)
               if hasattr(leaf, "dtype"))


class Checkpointer:
    """Saves and restores a train-state pytree in ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, create: bool = True):
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
        with io.writing(self.directory):
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handler())
        self._held = _HeldErrors()
        for name in ("absl", "asyncio"):
            logging.getLogger(name).addFilter(self._held)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = _quiet_closed_loops(self._previous_hook)
        self._closed = self._failed_once = False

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save; call :meth:`wait` before relying on it. WriteError if
        this save, or the previous one still in flight, failed, or when the file system has
        less free space than the state needs."""
        self.wait()
        needed = state_bytes(state) + SPACE_MARGIN
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            self._failed_once = True
            raise WriteError(f"cannot write a checkpoint of step {step} in {self.directory!r}: it needs about "
                             f"{needed / 2**20:,.1f} MiB and {free / 2**20:,.1f} MiB are free")
        try:
            self._manager.save(step, args=ocp.args.PyTreeSave(state))
        except Exception as e:  # Orbax and TensorStore raise ValueError, OSError, ...
            raise self._failed(e) from None

    def wait(self) -> None:
        """Waits for the save in flight; WriteError if it failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._failed(e) from None

    def _failed(self, error: Exception) -> WriteError:
        self._failed_once = True
        return io.write_error(self.directory, error)

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
            return self._manager.restore(step, args=_restore_args(target))
        except ValueError:
            # Checkpoints written before a dataclass state gained an optional field (e.g.
            # TrainState.ema_params) lack it: restore the other fields, keep the None.
            present = _present_fields(target)
            if present is None:
                raise
            restored = self._manager.restore(step, args=_restore_args(present))
            return dataclasses.replace(target, **restored)

    def close(self) -> None:
        """Waits for the save in flight (WriteError if it failed) and releases Orbax's threads."""
        if self._closed:
            return
        self._closed = True
        try:
            self._manager.close()
        except Exception as e:
            raise self._failed(e) from None
        finally:
            if not self._failed_once:  # After a failure, stragglers keep coming until the process exits.
                for name in ("absl", "asyncio"):
                    logging.getLogger(name).removeFilter(self._held)
                sys.unraisablehook = self._previous_hook

    def abandon(self) -> None:
        """Closes after a failure that is already being reported: errors of the save in
        flight are dropped (the failure that stopped the run is the one to report)."""
        try:
            self.close()
        except WriteError as e:
            log.debug("dropped while closing after a failure: %s", e)


def _present_fields(target: Any) -> dict | None:
    """A dataclass state's non-None fields as a dict, or None when it has no None field."""
    if not dataclasses.is_dataclass(target):
        return None
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    present = {name: value for name, value in fields.items() if value is not None}
    return present if len(present) < len(fields) else None
