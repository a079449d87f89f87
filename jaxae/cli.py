"""Shared command-line plumbing: flags generated from the config's fields, presets,
one-line errors and exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written), 1 a runtime
failure: training failed (e.g. a non-finite loss) or a file or checkpoint could not be
written (e.g. a full disk; the last good checkpoint is intact), 130 interrupted (a
checkpoint was saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

from jaxae import config as config_module
from jaxae.config import Config, ConfigError, validate
from jaxae.errors import TrainingError, WriteError


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


def _add_field(group, flag: str, field: dataclasses.Field, default: Any, choices=None) -> None:
    help_text = field.metadata.get("help", "")
    if field.type == "bool":  # --name / --no-name
        group.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=default,
                           help=f"{help_text} (default: {field.default})")
        return
    shown = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
    group.add_argument(f"--{flag}", type=_PARSERS[field.type], default=default, choices=choices,
                       metavar=None if choices else flag.upper(), help=f"{help_text} (default: {shown})")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config FILE`` and one ``--flag`` per field of every Config section, grouped by
    section. Only flags given on the command line are recorded (so they override a preset)."""
    from jaxae.families import REGISTRY

    parser.add_argument("--config", default=None, metavar="FILE",
                        help="preset: a .json config (nested or flat) or a .py file with get_config(); "
                             "flags given here override it")
    for section, cls in config_module.SECTIONS.items():
        group = parser.add_argument_group(f"{section} ({cls.__doc__.splitlines()[0].rstrip('.')})")
        for field in dataclasses.fields(cls):
            flag = field.metadata["flag"] or field.name
            choices = tuple(REGISTRY) if flag == "model" else field.metadata["choices"]
            _add_field(group, flag, field, argparse.SUPPRESS, choices)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of parsed flags: the defaults, then the ``--config`` preset, then the flags
    given on the command line; validated, family rules included."""
    from jaxae.families import check_config

    flat = config_module.load_preset(args.config) if getattr(args, "config", None) else {}
    flat.update({flag: getattr(args, flag) for flag in config_module.FLAGS if hasattr(args, flag)})
    return check_config(validate(Config.create(**flat)))


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field of a plain dataclass with help metadata (jaxae.distributed.Cluster)."""
    for field in dataclasses.fields(cls):
        _add_field(parser, field.name, field, field.default)


def dataclass_from_args(args: argparse.Namespace, cls: type):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def add_model_source_flags(parser: argparse.ArgumentParser) -> None:
    """--workdir DIR (a train.py run) or --pretrained NAME (a model shipped with jaxae)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workdir", help="a train.py work directory")
    source.add_argument("--pretrained", metavar="NAME",
                        help="a model shipped with jaxae (evaluate.py --list_pretrained)")


def load_trained(args: argparse.Namespace):
    """(model, params, step, config, folder) of --workdir or --pretrained; step is None for a
    shipped model; folder holds its config and any fitted prior."""
    from jaxae import pretrained, workdir

    if args.workdir is None and args.pretrained is None:
        raise ConfigError("give --workdir DIR (a train.py run) or --pretrained NAME (evaluate.py --list_pretrained)")
    if args.pretrained is not None:
        model, params, config = pretrained.load(args.pretrained)
        return model, params, None, config, pretrained.path(args.pretrained)
    model, params, step = workdir.load_model(args.workdir)
    return model, params, step, workdir.load_config(args.workdir), args.workdir


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
    except WriteError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


__all__ = ["ArgumentParser", "ConfigError", "TrainingError", "add_config_flags", "add_dataclass_flags",
           "add_model_source_flags", "config_from_args", "dataclass_from_args", "load_trained", "quiet_libraries",
           "run", "validate"]
