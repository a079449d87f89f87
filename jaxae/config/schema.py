"""The Config: its sections, flat flag names, JSON form (nested; the flat form of jaxae 0.1
loads too) and preset files."""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
from typing import Any

from jaxae import io
from jaxae.config.sections import (DataConfig, ModelConfig, ObjectiveConfig, OptimizerConfig,
                                   RunConfig)
from jaxae.errors import ConfigError

SECTIONS = {"data": DataConfig, "model": ModelConfig, "objective": ObjectiveConfig,
            "optimizer": OptimizerConfig, "run": RunConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run, in sections (see each section's fields and help)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    @classmethod
    def create(cls, **flat: Any) -> "Config":
        """A config from flat field names, e.g. ``Config.create(dataset="mnist", latent_dim=50)``
        (``model`` names the family, as the flag does). Not validated."""
        return cls().replace(**flat)

    def replace(self, **flat: Any) -> "Config":
        """A copy with fields changed by flat name (``model`` for the family)."""
        changes: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            section, field = locate(name)
            changes.setdefault(section, {})[field] = value
        return dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s), **c)
                                            for s, c in changes.items()})

    def flat(self) -> dict[str, Any]:
        """{flag name: value} over every section."""
        return {flag: getattr(getattr(self, section), field) for flag, (section, field) in FLAGS.items()}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """From the nested JSON form, or the flat form (flag names) older versions wrote; validated."""
        from jaxae.config.validation import validate

        return validate(cls.create(**flat_fields(d)))

    @classmethod
    def load(cls, path: str) -> "Config":
        d = read_json(path, "config")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"config {path!r}: {e}") from None

    def save(self, path: str) -> None:
        """Writes atomically: a crash never leaves a half-written config.json."""
        io.write_text(path, self.to_json() + "\n")


def flat_fields(d: Any) -> dict[str, Any]:
    """{flag: value} of a config dict in the nested JSON form or the flat form (flag names);
    unknown fields are refused, JSON lists become tuples. Not validated."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
    # Nested: only section names as keys. (A flat dict may hold just "model", the family's flag.)
    if set(d) <= set(SECTIONS) and not (set(d) == {"model"} and not isinstance(d["model"], dict)):
        flat = {}
        for section, values in d.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be an object, got {values!r}")
            known = {f.name for f in dataclasses.fields(SECTIONS[section])}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"unknown field(s) {unknown} in config section {section!r}; "
                                  f"known: {sorted(known)}")
            flat.update({_flag_of(section, k): v for k, v in values.items()})
    else:
        flat = dict(d)
    unknown = sorted(set(flat) - set(FLAGS))
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; known: {sorted(FLAGS)}")
    for name, value in flat.items():
        if FIELD_TYPES[name] == "tuple[int, ...]" and isinstance(value, list):
            flat[name] = tuple(value)
    return flat


def _flag_of(section: str, field: str) -> str:
    meta = next(f.metadata for f in dataclasses.fields(SECTIONS[section]) if f.name == field)
    return meta["flag"] or field


# flag name -> (section, field); flag name -> the field's dataclasses.Field.
FLAGS: dict[str, tuple[str, str]] = {}
FIELDS: dict[str, dataclasses.Field] = {}
for _section, _cls in SECTIONS.items():
    for _field in dataclasses.fields(_cls):
        _flag = _field.metadata["flag"] or _field.name
        FLAGS[_flag] = (_section, _field.name)
        FIELDS[_flag] = _field
FIELD_TYPES = {flag: field.type for flag, field in FIELDS.items()}
RESUMABLE = frozenset(flag for flag, field in FIELDS.items() if field.metadata["resumable"])


def locate(flag: str) -> tuple[str, str]:
    """(section, field) of a flat field name; ConfigError for an unknown one."""
    try:
        return FLAGS[flag]
    except KeyError:
        raise ConfigError(f"unknown config field {flag!r}; known: {sorted(FLAGS)}") from None


def read_json(path: str, what: str) -> Any:
    """The JSON value in ``path``; ConfigError naming ``what`` and the file when unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{what} {path!r} is not readable JSON: {e}") from None


def load_preset(path: str) -> dict[str, Any]:
    """A preset file as flat {flag: value}: JSON (nested or flat) or Python with ``get_config()``
    returning a Config or a dict (nested or flat). Not validated: flags may still override it."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path!r} is not a file (a .json or .py preset)")
    if path.endswith(".py"):
        try:
            namespace = runpy.run_path(path)
            value = namespace["get_config"]()
        except KeyError:
            raise ConfigError(f"--config {path!r} defines no get_config()") from None
        except Exception as e:  # A preset is user code: report its error in one line.
            raise ConfigError(f"--config {path!r} failed: {type(e).__name__}: {e}") from None
    elif path.endswith(".json"):
        value = read_json(path, "--config")
    else:
        raise ConfigError(f"--config {path!r} must end in .json or .py")
    if isinstance(value, Config):
        return value.flat()
    if not isinstance(value, dict):
        raise ConfigError(f"--config {path!r} must give a Config or a dict, got {type(value).__name__}")
    return flat_fields(value)


