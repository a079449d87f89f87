"""The importance-weighted autoencoder (Burda et al. 2015), ``iwae``.

loss = -mean_b log (1/K) sum_k p(x_b, z_bk) / q(z_bk|x_b) with z_bk ~ q(z|x_b) and
K = ``num_importance_samples`` (K = 1 is the VAE objective with a sampled KL). It
shares the VAE's networks; the logged ``nelbo``, ``recon`` and ``kl`` come from one
extra closed-form pass so runs compare with the VAE's.

The families built on other bounds of the same importance weights (miwae, piwae,
ciwae) subclass it and change ``samples_per_example`` and ``bound_loss``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.families.base import LatentModel, Params


@dataclasses.dataclass(frozen=True)
class IWAE(LatentModel):
    num_importance_samples: int = 1

    name = "iwae"
    settings = ("num_importance_samples",)

    @property
    def samples_per_example(self) -> int:
        """Posterior samples the training loss draws per example: K here."""
        return self.num_importance_samples

    def importance_log_weights(self, params: Params, batch: dict, keys: jax.Array) -> jax.Array:
        """The training batch's log-weights (B, samples_per_example), nats (``log_weights``)."""
        return self.log_weights(params, batch["x"], keys, self.samples_per_example,
                                cond=self.batch_condition(batch), x_in=batch["x_in"])

    def bound_loss(self, params: Params, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The objective on the importance weights: (scalar loss, extra scalars to log)."""
        return objectives.iwae_loss(self.importance_log_weights(params, batch, keys)), {}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        kl = jnp.sum(terms["kl_per_unit"], axis=-1)
        loss, scalars = self.bound_loss(params, batch, keys)
        return loss, {"nelbo": jnp.mean(terms["recon"] + kl), "recon": jnp.mean(terms["recon"]), "kl": jnp.mean(kl),
                      **scalars, "loss": loss}
