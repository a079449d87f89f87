"""The VAE with an inverse autoregressive flow posterior (Kingma et al. 2016), ``iaf``.

q(z|x): z0 = mean + exp(logvar / 2) * eps, eps ~ N(0, I), then ``iaf_steps`` T IAF steps
(jaxae.nets.iaf; each a MADE with two ELU hidden layers of ``iaf_hidden`` units, the
variable order reversed between steps), every step conditioned on a context h from the
encoder. The encoder is the flat network's (one stochastic layer, base.flat_net) with
2 * latent_dim outputs more: mean and logvar of z0 and h (2 * latent_dim numbers). Exactly

    log q(z_T|x) = log N(eps; 0, I) - sum_d logvar_d / 2 - sum_t sum_d log sigma_t,d.

p(z) = N(0, I). The KL has no closed form: the loss is VAE's (beta, ``kl_warmup_steps``,
``free_bits``, the last on the whole code's KL, one "unit") with the one-sample Monte Carlo
KL log q(z_T|x) - log p(z_T); evaluation's NELBO uses the same estimate and its IWAE
bound ``log_weights`` of the flow's exact density. With T = 0 this is the VAE (the same
parameters) with a Monte Carlo KL. ``encode``'s code is the flow's image of the mean
(eps = 0) and its logvar z0's. Unconditional or ``--conditional`` (the label enters the
encoder, hence h, and the decoder).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families.base import Params, flat_net
from jaxae.families.vae import VAE
from jaxae.likelihoods import Likelihood
from jaxae.nets.iaf import IAF as Flow
from jaxae.nets.stochastic import _repeat


class IAFNet(nn.Module):
    """The one-stochastic-layer network with an IAF posterior: the four methods of
    jaxae.nets.stochastic. encoder: x -> (2 D + 2 D) statistics when ``steps`` > 0 (z0's
    mean and logvar and the context), (D + D) otherwise; decoder: z (B, D) -> p(x|z)."""

    encoder: nn.Module
    decoder: nn.Module
    latent_dim: int
    steps: int
    hidden: int

    def setup(self):
        self.flow = Flow(self.latent_dim, self.steps, (self.hidden, self.hidden))

    def posterior(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        """eps (B, D) or (B, S, D) -> (z_T like eps, log q(z_T|x) like eps without its last
        axis, the code: the flow's image of the mean (B, D))."""
        mean, logvar, h = self.statistics(x, cond)
        code = self.flow(mean, h)[0]
        if eps.ndim == 3:
            mean, logvar, h = mean[:, None], logvar[:, None], h[:, None]
        z, log_det = self.flow(mean + jnp.exp(0.5 * logvar) * eps, h)
        return z, dist.standard_normal_log_prob(eps) - 0.5 * jnp.sum(logvar, axis=-1) - log_det, code

    def statistics(self, x: jax.Array, cond: jax.Array | None = None):
        """x -> z0's mean and logvar (B, D) and the context h (B, 2 D), empty without steps."""
        mean, logvar = self.encoder(x, cond)
        d = self.latent_dim
        return mean[:, :d], logvar[:, :d], jnp.concatenate([mean[:, d:], logvar[:, d:]], axis=-1)

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        z, log_q, code = self.posterior(x, eps, cond)
        kl = log_q - dist.standard_normal_log_prob(z)
        return self.decoder(z, cond), kl[:, None], code

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        z, log_q, _ = self.posterior(x, eps, cond)                                   # (B, S, D), (B, S)
        out = self.decoder(z.reshape(-1, z.shape[-1]), _repeat(cond, z.shape[1]))
        return out.reshape(*z.shape[:2], *out.shape[1:]), dist.standard_normal_log_prob(z) - log_q

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        mean, logvar, h = self.statistics(x, cond)
        return self.flow(mean, h)[0], logvar

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        return self.decoder(z, cond)


@dataclasses.dataclass(frozen=True)
class IAF(VAE):
    iaf_steps: int = 2
    iaf_hidden: int = 128

    name = "iaf"
    two_layers = False
    settings = ("beta", "kl_warmup_steps", "free_bits", "iaf_steps", "iaf_hidden")

    @classmethod
    def network(cls, config: Config, spec: InputSpec, likelihood: Likelihood) -> tuple[nn.Module, int, int]:
        flat, latent_dim, _ = flat_net(config, spec, likelihood)
        steps = config.objective.iaf_steps
        encoder = flat_net(config.replace(latent_dim=2 * latent_dim), spec, likelihood)[0].encoder if steps \
            else flat.encoder
        net = IAFNet(encoder=encoder, decoder=flat.decoder, latent_dim=latent_dim, steps=steps,
                     hidden=config.objective.iaf_hidden)
        return net, latent_dim, latent_dim

    def inference_mask(self, params: Params) -> Any:
        """As the base's, with the flow's parameters (``flow``) part of q(z|x)."""
        mask = super().inference_mask(params)
        return {name: jax.tree.map(lambda _: True, sub) if name == "flow" else mask[name]
                for name, sub in mask.items()}
