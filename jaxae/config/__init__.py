"""Typed, validated run configuration in sections, saved as JSON next to every run.

A :class:`Config` has five sections — ``data``, ``model``, ``objective``, ``optimizer``
and ``run`` — each a frozen dataclass whose fields carry their help text in
``metadata["help"]`` (the CLIs turn every field into one ``--flag``; the flag is the
field's name, except ``model.family`` which is ``--model``). A config is built once
(from flags, a preset file, or code), validated up front by :func:`validate`, and is
the only source of truth for how a model is built and trained. ``config.json`` in the
work directory is its JSON form; the flat form older versions wrote still loads.

Presets: ``--config FILE`` loads a JSON file (nested or flat) or a Python file whose
``get_config()`` returns a Config or a dict; flags given on the command line override it.
"""

from jaxae.config.schema import FIELD_TYPES, FIELDS, FLAGS, RESUMABLE, SECTIONS, Config, load_preset, locate
from jaxae.config.sections import (ACTIVATIONS, ARCHS, BINARIZE, BURDA_STAGES, CONDITIONS, DTYPES, HVAE_PRESETS,
                                   INPUT_NOISE, LIKELIHOODS, LR_SCHEDULES, MLP_PRESETS, PARALLEL, DataConfig,
                                   ModelConfig, ObjectiveConfig, OptimizerConfig, RunConfig, burda_epochs)
from jaxae.config.validation import incompatible_fields, total_steps, validate
from jaxae.errors import ConfigError

__all__ = ["ACTIVATIONS", "ARCHS", "BINARIZE", "BURDA_STAGES", "CONDITIONS", "DTYPES", "FIELDS", "FIELD_TYPES",
           "FLAGS", "HVAE_PRESETS", "INPUT_NOISE", "LIKELIHOODS", "LR_SCHEDULES", "MLP_PRESETS", "PARALLEL",
           "RESUMABLE", "SECTIONS", "Config", "ConfigError", "DataConfig", "ModelConfig", "ObjectiveConfig",
           "OptimizerConfig", "RunConfig", "burda_epochs", "incompatible_fields", "load_preset", "locate",
           "total_steps", "validate"]
