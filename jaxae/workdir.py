"""A train.py work directory: its layout, the run's config and input spec, and loading a
trained model from it.

    config.json        the run's Config (nested; the flat form of older versions loads too)
    input_spec.json    how the data entered the model (so it is rebuilt without the data)
    checkpoints/       Orbax checkpoints of the train state (jaxae.checkpoints)
    metrics.jsonl      one JSON object per evaluation
    prior.npz          the density fitted to the training codes (jaxae.priors)
    samples.png, reconstructions.png, tensorboard/
"""

from __future__ import annotations

import json
import os
import shutil

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
                              "mode": spec.mode}))


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
    import jax

    from jaxae.families import make_model
    from jaxae.training.state import create_train_state, make_optimizer

    config = load_config(workdir)
    try:
        model = make_model(config, load_input_spec(workdir))
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
