"""Variational autoencoder (Kingma & Welling 2014): Gaussian posterior, N(0, I) prior.

Objective: the negative ELBO in nats per image,
    -ELBO(x) = -E_q(z|x)[log p(x|z)] + KL(q(z|x) || N(0, I)),
with the expectation estimated by one reparameterised sample and the KL in closed form.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae.data import InputSpec, to_model_input
from jaxae.likelihoods import Likelihood

Params = Any


class VAENet(nn.Module):
    """Encoder + decoder. ``__call__(x, keys)`` -> (decoder output, posterior mean, logvar).

    x: float (B, H, W, C); keys: one PRNG key per example (B,), used for z ~ q(z|x).
    """

    encoder: nn.Module
    decoder: nn.Module

    def __call__(self, x: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, logvar = self.encoder(x)
        z = jax.vmap(dist.sample_diag_gaussian)(keys, mean, logvar)
        return self.decoder(z), mean, logvar

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)


def negative_elbo(net: VAENet, likelihood: Likelihood, params: Params, x: jax.Array,
                  keys: jax.Array) -> dict[str, jax.Array]:
    """Per-example terms of the negative ELBO, each (B,) in nats.

    Returns ``nelbo`` = ``recon`` + ``kl`` where recon = -log p(x|z) for one z ~ q(z|x)
    and kl = KL(q(z|x) || N(0, I)) in closed form.
    """
    out, mean, logvar = net.apply({"params": params}, x, keys)
    recon = -likelihood.log_prob(out, x)
    kl = dist.kl_diag_gaussian_standard_normal(mean, logvar)
    return {"nelbo": recon + kl, "recon": recon, "kl": kl}


@dataclasses.dataclass(frozen=True)
class VAE:
    """The VAE family: pure functions of (params, inputs, keys). Hashable, so jit-static."""

    net: VAENet
    likelihood: Likelihood
    spec: InputSpec
    latent_dim: int

    def init(self, rng: jax.Array) -> Params:
        x = jnp.zeros((1, *self.spec.image_shape), jnp.float32)
        keys = jax.random.split(rng, 2)
        return self.net.init(keys[0], x, keys[1:])["params"]

    def per_example(self, params: Params, images: jax.Array, keys: jax.Array) -> dict[str, jax.Array]:
        """uint8 images (B, H, W, C), keys (B,) -> per-example nats, each (B,).

        Each example's key is split: one half turns the image into model input
        (binarization / dequantization), the other draws z.
        """
        x = to_model_input(images, jax.vmap(jax.random.fold_in, (0, None))(keys, 0), self.spec)
        return negative_elbo(self.net, self.likelihood, params, x,
                             jax.vmap(jax.random.fold_in, (0, None))(keys, 1))

    def loss(self, params: Params, batch: dict[str, jax.Array], keys: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The training objective: mean negative ELBO over the batch (nats per image)."""
        terms = self.per_example(params, batch["image"], keys)
        metrics = {name: jnp.mean(value) for name, value in terms.items()}
        return metrics["nelbo"], metrics

    def log_importance_weights(self, params: Params, x: jax.Array, keys: jax.Array, num_samples: int,
                               start: jax.Array | int = 0) -> jax.Array:
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for z_s ~ q(z|x), s = start .. start+num_samples-1.

        x: float model input (B, H, W, C); keys: (B,) -> (B, num_samples) in nats. Sample s
        of an example uses the key fold_in(key, s), so drawing k samples in chunks gives
        the same samples whatever the chunk size. log mean_s exp(log w_s) is the IWAE
        bound on log p(x) (Burda et al. 2015).
        """
        mean, logvar = self.net.apply({"params": params}, x, method=VAENet.encode)
        index = start + jnp.arange(num_samples)
        draw = lambda key: jax.random.normal(jax.random.fold_in(key, 0), (self.latent_dim,))  # noqa: E731
        eps = jax.vmap(lambda k: jax.vmap(lambda i: draw(jax.random.fold_in(k, i)))(index))(keys)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps                    # (B, S, D)
        out = self.net.apply({"params": params}, z.reshape(-1, self.latent_dim), method=VAENet.decode)
        out = out.reshape(*z.shape[:2], *out.shape[1:])                              # (B, S, H, W, C*k)
        log_px_z = self.likelihood.log_prob(out, x[:, None])
        log_pz = dist.standard_normal_log_prob(z)
        log_qz = dist.diag_gaussian_log_prob(z, mean[:, None], logvar[:, None])
        return log_px_z + log_pz - log_qz

    def posterior(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Float model input (B, H, W, C) -> q(z|x) mean and logvar, each (B, latent_dim)."""
        return self.net.apply({"params": params}, x, method=VAENet.encode)

    def decode_mean(self, params: Params, z: jax.Array) -> jax.Array:
        """Latents (B, latent_dim) -> mean images (B, H, W, C) in [0, 1]."""
        return self.likelihood.mean(self.net.apply({"params": params}, z, method=VAENet.decode))

    def encode(self, params: Params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """uint8 images -> posterior (mean, logvar), each (B, latent_dim). Binary inputs
        use the pixel probabilities (no random binarization)."""
        x = images.astype(jnp.float32) / (1.0 if self.spec.mode == "binary" else 255.0)
        return self.posterior(params, x)

    def reconstruct(self, params: Params, images: jax.Array) -> jax.Array:
        """uint8 images -> mean reconstructions in [0, 1] decoded from the posterior mean."""
        return self.decode_mean(params, self.encode(params, images)[0])
