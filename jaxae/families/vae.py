"""The variational autoencoder (Kingma & Welling 2014) and its weighted variants.

- ``vae``: q(z|x) = N(mean, diag var), p(z) = N(0, I); loss = -ELBO = -E_q[log p(x|z)] +
  KL(q || p), one reparameterised sample, the KL in closed form.
- ``beta_vae`` (Higgins et al. 2017): the same with the KL weighted by ``beta``.
- ``cvae`` (Sohn et al. 2015): the same, conditioned on the class label (``--conditional``
  on any family does the same; ``--condition lowres`` conditions on a low-resolution image).

Settings: ``beta``; ``kl_warmup_steps`` (the KL weight rises linearly from 0 to beta);
``free_bits`` (nats per latent unit below which the batch-averaged KL of that unit is
not penalised; Kingma et al. 2016). With two stochastic layers the units are z1's and
z2's dimensions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.families.base import LatentModel, Params


@dataclasses.dataclass(frozen=True)
class VAE(LatentModel):
    beta: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0

    name = "vae"
    settings = ("beta", "kl_warmup_steps", "free_bits")

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        recon, kl_per_unit = terms["recon"], terms["kl_per_unit"]
        weight = objectives.kl_weight(step, self.beta, self.kl_warmup_steps)
        loss = objectives.elbo_loss(recon, kl_per_unit, weight, self.free_bits)
        kl = jnp.sum(kl_per_unit, axis=-1)
        return loss, {"nelbo": jnp.mean(recon + kl), "recon": jnp.mean(recon), "kl": jnp.mean(kl),
                      "kl_weight": weight, "loss": loss, **self.kl_scalars(kl_per_unit)}

    def kl_scalars(self, kl_per_unit: jax.Array) -> dict[str, jax.Array]:
        """Extra batch-mean scalars from the KL per unit (B, U) to log; none here."""
        return {}


@dataclasses.dataclass(frozen=True)
class ConditionalVAE(VAE):
    """``cvae``: the VAE with ``conditional`` always on."""

    name = "cvae"
    conditions = ("none", "label")  # Always the label (--condition lowres is vae's).

    @classmethod
    def build(cls, config, spec):
        return super().build(config.replace(conditional=True), spec)
