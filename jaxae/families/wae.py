"""The Wasserstein autoencoder with the MMD penalty (Tolstikhin et al. 2018), ``wae``.

A deterministic encoder z = the encoder's mean and the prior p(z) = N(0, I); the loss is

    mean_b [-log p(x_b|z_b)] + mmd_weight * MMD^2(q(z), p(z)),

the reconstruction cost being the data likelihood's -log p(x|z) (the Gaussian likelihood
gives the paper's squared L2 cost up to scale and a constant) and MMD^2 the unbiased
U-statistic estimate with the inverse multiquadratic kernel of C = 2 d (d = latent_dim,
the prior's variance 1; ``objectives.mmd_imq``) between the batch's codes and as many
prior draws (``example_prior_draws``). It has no likelihood bound: evaluation reports the
reconstruction term (``loss`` = ``recon``, per image; the MMD is a batch statistic).
Samples decode N(0, I) draws, the prior the loss matches.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.families.ae import AE
from jaxae.families.base import Params


@dataclasses.dataclass(frozen=True)
class WAE(AE):
    mmd_weight: float = 10.0

    name = "wae"
    settings = ("mmd_weight",)

    @property
    def has_prior(self) -> bool:
        return True

    def eval_terms(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        recon = self.forward(params, batch, keys)["recon"]
        return {"loss": recon, "recon": recon}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        mmd = objectives.mmd_imq(terms["code"], self.example_prior_draws(params, keys))
        loss = jnp.mean(terms["recon"]) + self.mmd_weight * mmd
        return loss, {"loss": loss, "recon": jnp.mean(terms["recon"]), "mmd": mmd}
