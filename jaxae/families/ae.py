"""The deterministic autoencoder, ``ae``: code z = the encoder's mean; loss =
-log p(x|z) + code_l2 ||z||^2 (the L2 term as in RAE, Ghosh et al. 2020).

It has no likelihood bound: evaluation reports the reconstruction term, and samples
come from the density fitted to the training codes (jaxae.priors, ``prior.npz``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.config import Config
from jaxae.errors import ConfigError
from jaxae.families.base import LatentModel, Params


@dataclasses.dataclass(frozen=True)
class AE(LatentModel):
    code_l2: float = 0.0

    name = "ae"
    settings = ("code_l2",)
    deterministic = True

    @classmethod
    def check(cls, config: Config) -> None:
        super().check(config)
        if config.model.stochastic_layers != 1:
            raise ConfigError(f"--stochastic_layers 2 needs a stochastic model (vae, beta_vae, iwae, cvae), "
                              f"not {cls.name}")

    def eval_terms(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        terms = self.forward(params, batch, keys)
        penalty = self.code_l2 * jnp.sum(jnp.square(terms["code"]), axis=-1)
        return {"loss": terms["recon"] + penalty, "recon": terms["recon"]}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        loss = objectives.autoencoder_loss(terms["recon"], terms["code"], self.code_l2)
        return loss, {"loss": loss, "recon": jnp.mean(terms["recon"])}
