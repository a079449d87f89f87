"""Work-directory layout and Orbax checkpoints.

A work directory holds ``config.json`` (the run's :class:`~jaxae.config.Config`) and
``checkpoints/<step>/`` written by an Orbax ``CheckpointManager``. Orbax writes each
checkpoint into a temporary folder and renames it when complete, so a crash never
leaves a checkpoint that looks finished. Checkpoints hold arrays only; nothing is
ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import orbax.checkpoint as ocp

from jaxae.config import Config, ConfigError, incompatible_fields
from jaxae.data import InputSpec

CONFIG_FILE = "config.json"
INPUT_SPEC_FILE = "input_spec.json"
CHECKPOINT_DIR = "checkpoints"

log = logging.getLogger(__name__)


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def load_run_config(workdir: str) -> Config:
    """The config a run in ``workdir`` was trained with (ConfigError if there is none)."""
    path = config_path(workdir)
    if not os.path.isfile(path):
        raise ConfigError(f"--workdir {workdir!r} holds no {CONFIG_FILE}; train a model there with train.py first")
    return Config.load(path)


def check_resumable(workdir: str, config: Config) -> Config | None:
    """Returns the saved config of ``workdir`` (None if new); refuses a different model config."""
    if not os.path.exists(config_path(workdir)):
        return None
    saved = load_run_config(workdir)
    diff = incompatible_fields(saved, config)
    if diff:
        details = ", ".join(f"{name}={getattr(saved, name)!r} (asked {getattr(config, name)!r})" for name in diff)
        raise ConfigError(f"--workdir {workdir!r} holds a run with a different config: {details}; "
                          "use another --workdir, or --reset to discard that run")
    return saved


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


def save_input_spec(workdir: str, spec: InputSpec) -> None:
    """Records how the data entered the model, so the model can be rebuilt without the data."""
    path = os.path.join(workdir, INPUT_SPEC_FILE)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"image_shape": list(spec.image_shape), "num_classes": spec.num_classes, "mode": spec.mode}, f)
    os.replace(tmp, path)


def load_input_spec(workdir: str) -> InputSpec:
    path = os.path.join(workdir, INPUT_SPEC_FILE)
    try:
        with open(path) as f:
            d = json.load(f)
        return InputSpec(image_shape=tuple(int(v) for v in d["image_shape"]),
                         num_classes=int(d["num_classes"]), mode=str(d["mode"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read {path!r} ({type(e).__name__}: {e}); "
                          f"is {workdir!r} a train.py workdir?") from None


def load_model(workdir: str):
    """Rebuilds the model of a train.py work directory and restores its newest parameters
    (their moving average when the run kept one, ``--ema_decay``).

    Returns (model, params, step). ConfigError when the directory holds no usable run.
    """
    from jaxae.models import make_model
    from jaxae.training import create_train_state, make_optimizer

    config = load_run_config(workdir)
    try:
        model = make_model(config, load_input_spec(workdir))
    except ConfigError as e:
        raise ConfigError(f"cannot build the model saved in {workdir!r}: {e}") from None
    import jax

    state = create_train_state(model, make_optimizer(config, config.steps), jax.random.key(0),
                               ema=config.ema_decay > 0)
    if not os.path.isdir(checkpoint_dir(workdir)):
        raise ConfigError(f"--workdir {workdir!r} holds no checkpoint; train a model there with train.py first")
    checkpointer = Checkpointer(workdir, create=False)
    restored = checkpointer.restore(state)
    checkpointer.close()
    if restored is None:
        raise ConfigError(f"--workdir {workdir!r} holds no readable checkpoint in {checkpoint_dir(workdir)!r}")
    step, state = restored
    return model, state.eval_params(), step
