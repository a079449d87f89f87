"""InfoVAE (Zhao et al. 2019, "InfoVAE: balancing learning and inference in variational
autoencoders"), ``infovae``, with the MMD divergence (the MMD-VAE).

The paper's objective, with mixing weight alpha and information preference lambda, is
E[log p(x|z)] - (1 - alpha) KL(q(z|x) || p(z)) - (alpha + lambda - 1) D(q(z) || p(z)). Its
two weights are the settings, named plainly:

    loss = mean_b [-log p(x_b|z_b) + beta KL(q(z|x_b) || N(0, I))] + mmd_weight * MMD^2(q(z), p(z)),

beta = 1 - alpha (``--beta``), mmd_weight = alpha + lambda - 1 (``--mmd_weight``): beta 1
and mmd_weight 0 is the VAE; beta 0 the MMD-VAE. The KL is in closed form; MMD^2 is the
unbiased inverse-multiquadratic estimate (``objectives.mmd_imq``, as the wae's) between
the batch's posterior samples z_b ~ q(z|x_b) (the reconstruction's) and as many N(0, I)
draws. It keeps the VAE's q(z|x), so evaluation reports its NELBO and IWAE bound. One
stochastic layer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.families.base import LatentModel, Params


@dataclasses.dataclass(frozen=True)
class InfoVAE(LatentModel):
    beta: float = 1.0
    mmd_weight: float = 10.0

    name = "infovae"
    settings = ("beta", "mmd_weight")
    two_layers = False

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        recon, kl_per_unit = terms["recon"], terms["kl_per_unit"]
        mmd = objectives.mmd_imq(self.posterior_sample(params, batch, keys)[0], self.example_prior_draws(params, keys))
        loss = objectives.elbo_loss(recon, kl_per_unit, self.beta) + self.mmd_weight * mmd
        kl = jnp.sum(kl_per_unit, axis=-1)
        return loss, {"nelbo": jnp.mean(recon + kl), "recon": jnp.mean(recon), "kl": jnp.mean(kl), "mmd": mmd,
                      "loss": loss}
