"""Shared command-line plumbing: flags generated from Config, one-line errors, exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written), 1 a training
failure such as a non-finite loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from typing import Callable

from jaxae.config import Config, ConfigError, validate  # noqa: F401  (re-exported for the CLIs)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last checkpoint is intact."""

HELP = {
    "dataset": "TFDS image dataset name (mnist_5k is embedded and offline)",
    "data_dir": "TFDS data directory (default: TFDS's own)",
    "manual_dir": "folder with the dataset's downloaded source files, to prepare it offline",
    "train_split": "TFDS split to train on, e.g. 'train[:45000]' to hold out a validation set",
    "eval_split": "TFDS split to evaluate on, e.g. test or 'train[45000:]'",
    "binarize": "dynamic: Bernoulli-binarize 8-bit images each step; none: score grey levels",
    "model": "model family",
    "arch": "encoder/decoder architecture",
    "hidden_dims": "MLP hidden widths, comma-separated",
    "channels": "conv widths per stride-2 stage, comma-separated",
    "activation": "hidden-layer nonlinearity",
    "latent_dim": "size of the latent z (z1 with two stochastic layers)",
    "stochastic_layers": "1, or 2 for Burda et al.'s x-z1-z2 hierarchy (mlp)",
    "top_latent_dim": "size of z2 with --stochastic_layers 2",
    "top_hidden_dims": "MLP widths between z1 and z2, comma-separated",
    "likelihood": "pixel likelihood p(x|z)",
    "gaussian_scale": "fixed std of the Gaussian likelihood on [0, 1] pixels (default: learned)",
    "num_mixtures": "mixture components of --likelihood logistic_mixture",
    "beta": "KL weight (beta_vae; 1 = VAE)",
    "kl_warmup_steps": "KL weight rises linearly from 0 over N steps",
    "free_bits": "nats per latent dim of KL that are free (batch-averaged)",
    "num_importance_samples": "K of the IWAE objective (iwae)",
    "code_l2": "L2 penalty on the code (ae)",
    "input_noise": "corrupt the encoder input only (denoising)",
    "noise_level": "flip/mask probability or Gaussian std of --input_noise",
    "hflip": "flip training images left-right at random (augmentation; never in evaluation)",
    "latent_mixture": "Gaussian-mixture components fitted to the codes after training (0: one Gaussian)",
    "steps": "training steps",
    "epochs": "training epochs (overrides --steps)",
    "batch_size": "global batch size",
    "learning_rate": "Adam (peak) learning rate",
    "lr_schedule": "learning-rate schedule",
    "warmup_steps": "linear warm-up steps",
    "grad_clip": "clip gradients to this global norm (0: off)",
    "skip_threshold": "skip (and count) updates whose gradient norm exceeds this (0: off)",
    "ema_decay": "evaluate and sample with an exponential moving average of the params (0: off)",
    "seed": "seed of all randomness",
    "eval_every": "evaluate every N steps",
    "checkpoint_every": "checkpoint every N steps",
    "keep_checkpoints": "checkpoints to keep",
    "steps_per_call": "training steps fused into one compiled call",
    "max_nonfinite": "stop after N consecutive non-finite steps (each is skipped)",
    "parallel": "multi-device mode: sharded (jit over a mesh) or pmap",
    "dtype": "compute dtype of the networks (params, loss and optimizer stay float32)",
    # jaxae.distributed.Cluster: joining a multi-process run.
    "coordinator_address": "multi-process run: HOST:PORT of process 0; none: $JAX_COORDINATOR_ADDRESS",
    "num_processes": "multi-process run: number of processes, 1 never starts jax.distributed; "
                     "none: $JAX_NUM_PROCESSES, else detected",
    "process_id": "multi-process run: this process's index; none: $JAX_PROCESS_ID, else detected",
}
CHOICES = {"model": "MODELS", "arch": "ARCHS", "activation": "ACTIVATIONS", "likelihood": "LIKELIHOODS",
           "binarize": "BINARIZE", "lr_schedule": "LR_SCHEDULES", "input_noise": "INPUT_NOISE",
           "parallel": "PARALLEL", "dtype": "DTYPES"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit with status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _optional(parse: Callable) -> Callable:
    return lambda text: None if text.lower() == "none" else parse(text)


_PARSERS = {"str": str, "int": int, "float": float, "tuple[int, ...]": _int_list,
            "str | None": _optional(str), "int | None": _optional(int), "float | None": _optional(float)}


def add_config_flags(parser: argparse.ArgumentParser, cls: type = Config) -> None:
    """Adds one ``--name`` flag per field of the dataclass ``cls`` (Config, or
    jaxae.distributed.Cluster), defaulting to the field's default."""
    from jaxae import config as config_module

    for field in dataclasses.fields(cls):
        choices = getattr(config_module, CHOICES[field.name]) if field.name in CHOICES else None
        default = field.default
        if field.type == "bool":  # --name / --no-name
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=default,
                                help=f"{HELP[field.name]} (default: {default})")
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{field.name}", type=_PARSERS[field.type], default=default, choices=choices,
                            metavar=None if choices else field.name.upper(),
                            help=f"{HELP[field.name]} (default: {shown})")


def config_from_args(args: argparse.Namespace, cls: type = Config):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def quiet_libraries() -> None:
    """Keeps TensorFlow, absl and Orbax from flooding the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Runs a CLI ``main``: bad input -> one line on stderr and exit status 2."""
    prog = os.path.basename(sys.argv[0]) or "jaxae"
    if threading.current_thread() is threading.main_thread():  # SIGTERM (preemption) acts like Ctrl-C.
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        main(argv)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"{prog}: training failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
