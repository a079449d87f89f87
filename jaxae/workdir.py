"""A train.py work directory: its layout, the run's config and input spec, and loading a
trained model from it.

    config.json        the run's Config (nested; the flat form of older versions loads too)
    input_spec.json    how the data entered the model (so it is rebuilt without the data)
    checkpoints/       Orbax checkpoints of the train state (jaxae.checkpoints)
    metrics.jsonl      one JSON object per evaluation
    prior.npz          the density fitted to the training codes (jaxae.priors)
    samples.png, reconstructions.png, tensorboard/
    lock.json          while a train.py run uses the directory: its pid, host and start time
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator

from jaxae import checkpoints, io
from jaxae.config import Config, incompatible_fields
from jaxae.data import InputSpec
from jaxae.errors import ConfigError

CONFIG_FILE = "config.json"
INPUT_SPEC_FILE = "input_spec.json"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = "lock.json"


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def load_config(workdir: str) -> Config:
    """The config a run in ``workdir`` was trained with (ConfigError if there is none)."""
    path = config_path(workdir)
    if not os.path.isfile(path):
        raise ConfigError(f"--workdir {workdir!r} holds no {CONFIG_FILE}; train a model there with train.py first")
    return Config.load(path)


def check_resumable(workdir: str, config: Config) -> Config | None:
    """Returns the saved config of ``workdir`` (None if new); refuses a different model config."""
    if not os.path.exists(config_path(workdir)):
        return None
    saved = load_config(workdir)
    diff = incompatible_fields(saved, config)
    if diff:
        old, new = saved.flat(), config.flat()
        details = ", ".join(f"{name}={old[name]!r} (asked {new[name]!r})" for name in diff)
        raise ConfigError(f"--workdir {workdir!r} holds a run with a different config: {details}; "
                          "use another --workdir, or --reset to discard that run")
    return saved


def check_writable(workdir: str) -> None:
    parent = workdir
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {workdir!r} cannot be created or written "
                          f"({parent!r} is not a writable directory)")
    if parent != workdir:  # Some file systems (/proc, /sys, ...) refuse what access() allows: try.
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".jaxae-probe-", dir=parent))
        except OSError as e:
            raise ConfigError(f"--workdir {workdir!r} cannot be created in {parent!r} "
                              f"({io.failure_reason(e)})") from None


def reset(workdir: str) -> None:
    """Removes a previous run's checkpoints, config and metrics from ``workdir``."""
    shutil.rmtree(checkpoints.checkpoint_dir(workdir), ignore_errors=True)
    for name in (CONFIG_FILE, METRICS_FILE):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            os.remove(path)


def save_input_spec(workdir: str, spec: InputSpec) -> None:
    """Records how the data entered the model, so the model can be rebuilt without the data."""
    io.write_text(os.path.join(workdir, INPUT_SPEC_FILE),
                  json.dumps({"image_shape": list(spec.image_shape), "num_classes": spec.num_classes,
                              "mode": spec.mode, "num_train": spec.num_train}))


def load_input_spec(workdir: str) -> InputSpec:
    path = os.path.join(workdir, INPUT_SPEC_FILE)
    try:
        with open(path) as f:
            d = json.load(f)
        return InputSpec(image_shape=tuple(int(v) for v in d["image_shape"]),
                         num_classes=int(d["num_classes"]), mode=str(d["mode"]),
                         num_train=int(d.get("num_train", 0)))  # Absent in runs before it was recorded.
    except ConfigError as e:
        raise ConfigError(f"{path!r} is not a valid input spec: {e}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read {path!r} ({type(e).__name__}: {e}); "
                          f"is {workdir!r} a train.py workdir?") from None


def load_model(workdir: str):
    """Rebuilds the model of a train.py work directory and restores its newest parameters
    (their moving average when the run kept one, ``--ema_decay``).

    Returns (model, params, step). ConfigError when the directory holds no usable run.
    """
    import jax

    from jaxae.families import make_model
    from jaxae.training.state import create_train_state, make_optimizer

    config = load_config(workdir)
    spec = load_input_spec(workdir)
    try:
        model = make_model(config, spec)
    except ConfigError as e:
        raise ConfigError(f"cannot build the model saved in {workdir!r}: {e}") from None
    # The optimizer's state only gives the checkpoint's structure: its schedule does not matter.
    state = create_train_state(model, make_optimizer(config.optimizer, 1), jax.random.key(0),
                               ema=config.optimizer.ema_decay > 0)
    if not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
        raise ConfigError(f"--workdir {workdir!r} holds no checkpoint; train a model there with train.py first")
    checkpointer = checkpoints.Checkpointer(workdir, create=False)
    restored = checkpointer.restore(state)
    checkpointer.close()
    if restored is None:
        raise ConfigError(f"--workdir {workdir!r} holds no readable checkpoint in "
                          f"{checkpoints.checkpoint_dir(workdir)!r}")
    step, state = restored
    return model, state.eval_params(), step


def _process_start(pid: int) -> str | None:
    """A token that changes when ``pid`` is reused: the process's start time in clock ticks
    since boot (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process recorded in a lock on this host still runs (and is the same one)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by another user.
        return True
    start = _process_start(pid)
    return start is None or holder.get("process_start") in (None, start)


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds ``workdir/lock.json`` while a run trains there, so a second train.py on the same
    work directory is refused with a line naming the holder (pid, host, start time). A lock
    left by a process that no longer runs on this host is stale and taken over; one from
    another host cannot be checked, and the message says how to remove it. Only process 0
    of a multi-process run calls this."""
    path = os.path.join(workdir, LOCK_FILE)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    holder = json.load(f)
                if not isinstance(holder, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                holder = {}  # Unreadable (a crash while writing it): stale.
            here = holder.get("host") == me["host"]
            if (here and _alive(holder)) or (holder and not here):
                where = "" if here else f"; if that run is gone, delete {path}"
                raise ConfigError(f"--workdir {workdir!r} is in use by pid {holder.get('pid')} on "
                                  f"{holder.get('host')} since {holder.get('started')}{where}") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # Stale: its process is gone.
            continue
        except OSError as e:
            raise io.write_error(path, e) from None
        try:
            with io.writing(path), os.fdopen(fd, "w") as f:
                json.dump(me, f)
        except BaseException:  # A half-written lock would read as stale; remove it anyway.
            with contextlib.suppress(OSError):
                os.remove(path)
            raise
        break
    else:
        raise ConfigError(f"--workdir {workdir!r}: could not take {path} (another run keeps taking it)")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            with open(path) as f:
                mine = json.load(f).get("pid") == me["pid"]
            if mine:
                os.remove(path)
