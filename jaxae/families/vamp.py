"""The VAE with a VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"), ``vamp``.

The prior is the uniform mixture of the encoder's posteriors at K = ``vamp_components``
learned pseudo-inputs u_k:

    p(z) = (1/K) sum_k q(z | u_k),   log p(z) = logsumexp_k log N(z; mu(u_k), sigma^2(u_k)) - log K.

The pseudo-inputs are sigmoid of learned (K, H, W, C) parameters (initialised N(0, 1)),
so they lie in (0, 1) as the encoder's inputs do. With no closed form for the KL the loss
is the negative ELBO with a one-sample Monte Carlo KL, log q(z|x) - log p(z) at the
reparameterised z ~ q(z|x), its weight rising linearly from 0 to 1 over
``kl_warmup_steps`` (Tomczak & Welling warm up over 100 epochs); evaluation's NELBO uses the same estimate (one latent
"unit": the whole code) and its IWAE bound the VampPrior's log-density (``log_weights``).
Samples: a component k uniformly, then z ~ q(z|u_k), its standard deviation scaled by the
temperature. One stochastic layer.

Conditioned (``--conditional`` or ``--condition lowres``), encoder and decoder see the
condition c as in every family, and the prior stays one mixture that does not depend on c
(as the conditional VAE's N(0, I) does not): each pseudo-input carries a condition of its
own, p(z) = (1/K) sum_k q(z | u_k, c_k), with c_k = box_average(u_k) (its own low-resolution
version) for ``lowres`` and a learned soft label softmax(l_k) (params ``pseudo_labels``
(K, num_classes), initialised 0: uniform) for ``label``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae import objectives
from jaxae.conditioning import Conditioning, box_average
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families.base import LatentModel, Params, conditioning_of, flat_net
from jaxae.likelihoods import Likelihood
from jaxae.nets import OneLayerNet


class VampNet(OneLayerNet):
    """The one-stochastic-layer network (its ``encode`` and ``decode``) with the VampPrior's
    pseudo-inputs (params ``pseudo_inputs`` (K, H, W, C), and ``pseudo_labels`` (K, num_classes)
    when conditioned on the label) for its prior; ``conditioning``: the model's condition."""

    num_components: int
    image_shape: tuple[int, int, int]
    conditioning: Conditioning = Conditioning()

    def setup(self):
        self.pseudo_inputs = self.param("pseudo_inputs", nn.initializers.normal(1.0),
                                        (self.num_components, *self.image_shape))
        if self.conditioning.kind == "label":
            self.pseudo_labels = self.param("pseudo_labels", nn.initializers.zeros,
                                            (self.num_components, self.conditioning.num_classes))

    def pseudo_condition(self, u: jax.Array) -> jax.Array | None:
        """The networks' condition c_k of the pseudo-inputs u (K, H, W, C): None, the soft label
        softmax(pseudo_labels) (K, num_classes), or box_average(u) (K, H/F, W/F, C)."""
        if self.conditioning.kind == "label":
            return jax.nn.softmax(self.pseudo_labels, axis=-1)
        if self.conditioning.kind == "lowres":
            return box_average(u, self.conditioning.factor)
        return None

    def components(self) -> tuple[jax.Array, jax.Array]:
        """The mixture's means and log-variances, each (K, D): q(z|u_k, c_k), u_k = sigmoid(pseudo_inputs_k)."""
        u = jax.nn.sigmoid(self.pseudo_inputs)
        return self.encoder(u, self.pseudo_condition(u))

    def log_prior(self, z: jax.Array) -> jax.Array:
        """log p(z) under the VampPrior, (..., D) -> (...)."""
        means, logvars = self.components()
        log_q = dist.diag_gaussian_log_prob(z[..., None, :], means, logvars)       # (..., K)
        return jax.nn.logsumexp(log_q, axis=-1) - math.log(self.num_components)

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean + jnp.exp(0.5 * logvar) * eps
        kl = dist.diag_gaussian_log_prob(z, mean, logvar) - self.log_prior(z)
        return self.decoder(z, cond), kl[:, None], mean

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps                    # (B, S, D)
        out = self.decoder(z.reshape(-1, z.shape[-1]), cond)
        log_ratio = self.log_prior(z) - dist.diag_gaussian_log_prob(z, mean[:, None], logvar[:, None])
        return out.reshape(*z.shape[:2], *out.shape[1:]), log_ratio

    def draw(self, rng: jax.Array, num_samples: int, scale: float | jax.Array = 1.0) -> jax.Array:
        """num_samples draws (num_samples, D) of the prior: with (component_key, noise_key) =
        split(rng), k = randint(component_key, 0..K-1), z = mu_k + scale sigma_k N(0, I) from noise_key."""
        component_key, noise_key = jax.random.split(rng)
        means, logvars = self.components()
        k = jax.random.randint(component_key, (num_samples,), 0, self.num_components)
        eps = jax.random.normal(noise_key, (num_samples, means.shape[1]))
        return means[k] + scale * jnp.exp(0.5 * logvars[k]) * eps


@dataclasses.dataclass(frozen=True)
class VAMP(LatentModel):
    vamp_components: int = 500
    kl_warmup_steps: int = 0

    name = "vamp"
    settings = ("vamp_components", "kl_warmup_steps")
    two_layers = False

    @classmethod
    def network(cls, config: Config, spec: InputSpec, likelihood: Likelihood) -> tuple[nn.Module, int, int]:
        flat, latent_dim, _ = flat_net(config, spec, likelihood)
        net = VampNet(encoder=flat.encoder, decoder=flat.decoder, num_components=config.objective.vamp_components,
                      image_shape=spec.image_shape, conditioning=conditioning_of(config, spec))
        return net, latent_dim, latent_dim

    def log_prior(self, params: Params, z: jax.Array) -> jax.Array:
        """log p(z) under the VampPrior, (..., latent_dim) -> (...) nats."""
        return self.net.apply({"params": params}, z, method=VampNet.log_prior)

    def prior_draws(self, params: Params, rng: jax.Array, num_samples: int,
                    scale: float | jax.Array = 1.0) -> jax.Array:
        """(num_samples, latent_dim) from the VampPrior (``VampNet.draw``), std scaled by ``scale``."""
        return self.net.apply({"params": params}, rng, num_samples, scale, method=VampNet.draw)

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        recon, kl = terms["recon"], jnp.sum(terms["kl_per_unit"], axis=-1)
        weight = objectives.kl_weight(step, 1.0, self.kl_warmup_steps)
        loss = objectives.elbo_loss(recon, terms["kl_per_unit"], weight)
        return loss, {"nelbo": jnp.mean(recon + kl), "recon": jnp.mean(recon), "kl": jnp.mean(kl),
                      "kl_weight": weight, "loss": loss}
