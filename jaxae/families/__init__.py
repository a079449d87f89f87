"""Model families behind one interface (jaxae.families.base), found through a registry.

    model = jaxae.families.make_model(config, spec)     # the family config.model.family names

Adding a family is one file (a subclass of :class:`LatentModel`, or any class with the
same methods) plus one line here, or a :func:`register` call from user code. The
training loop, evaluation and ``sample.py`` use only the interface.
"""

from __future__ import annotations

import dataclasses

from jaxae.config import Config, ObjectiveConfig
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families.ae import AE
from jaxae.families.base import LatentModel
from jaxae.families.btcvae import BetaTCVAE
from jaxae.families.ciwae import CIWAE
from jaxae.families.draw import DRAW
from jaxae.families.hvae import HVAE
from jaxae.families.iaf import IAF
from jaxae.families.infovae import InfoVAE
from jaxae.families.iwae import IWAE
from jaxae.families.miwae import MIWAE
from jaxae.families.piwae import PIWAE
from jaxae.families.rae import RAEGP, RAEL2
from jaxae.families.two_stage import TwoStage
from jaxae.families.vamp import VAMP
from jaxae.families.vqvae import VQVAE
from jaxae.families.wae import WAE
from jaxae.families.vae import VAE, ConditionalVAE

REGISTRY: dict[str, type] = {
    "vae": VAE,
    "beta_vae": VAE,
    "cvae": ConditionalVAE,
    "iwae": IWAE,
    "ae": AE,
    "hvae": HVAE,
    "miwae": MIWAE,
    "piwae": PIWAE,
    "ciwae": CIWAE,
    "vamp": VAMP,
    "iaf": IAF,
    "two_stage": TwoStage,
    "wae": WAE,
    "infovae": InfoVAE,
    "btcvae": BetaTCVAE,
    "rae_l2": RAEL2,
    "rae_gp": RAEGP,
    "draw": DRAW,
    "vqvae": VQVAE,
}


def register(name: str, family: type) -> None:
    """Makes ``family`` available as ``--model name`` (e.g. from a plug-in module or a test)."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a family name is letters, digits and underscores, got {name!r}")
    REGISTRY[name] = family


def family_class(name: str) -> type:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"--model {name!r} is not one of {', '.join(REGISTRY)}") from None


def check_config(config: Config) -> Config:
    """The family-dependent checks of a validated config: the family exists, accepts the
    condition asked for (``conditions``), and every objective setting it does not use is left at
    its default (a setting that would be silently ignored is refused)."""
    cls = family_class(config.model.family)
    kind = config.model.condition_kind
    if kind not in (cls.conditions if cls.supports_conditional else ("none",)):
        flag = "--conditional" if config.model.conditional else f"--condition {kind}"
        raise ConfigError(f"{flag} is not available for --model {config.model.family}")
    defaults = ObjectiveConfig()
    for field in dataclasses.fields(ObjectiveConfig):
        value = getattr(config.objective, field.name)
        if field.name not in cls.settings and value != getattr(defaults, field.name):
            uses = ", ".join(f"--{s}" for s in cls.settings) or "none of them"
            raise ConfigError(f"--{field.name} {value} is not used by --model {config.model.family} "
                              f"(of the objective settings it uses {uses})")
    cls.check(config)
    return config


def make_model(config: Config, spec: InputSpec) -> LatentModel:
    """The family of ``config`` for inputs described by ``spec``."""
    model = family_class(check_config(config).model.family).build(config, spec)
    if model.conditioning.kind == "label" and spec.num_classes < 2:
        raise ConfigError(f"--model {config.model.family} is conditional and needs a labelled dataset; "
                          f"{config.data.dataset!r} has no class labels")
    return model


__all__ = ["AE", "BetaTCVAE", "CIWAE", "DRAW", "HVAE", "IAF", "IWAE", "MIWAE", "InfoVAE", "PIWAE", "RAEGP",
           "RAEL2", "REGISTRY", "TwoStage", "VAE", "VAMP", "VQVAE", "WAE", "ConditionalVAE", "LatentModel",
           "check_config", "family_class", "make_model", "register"]
