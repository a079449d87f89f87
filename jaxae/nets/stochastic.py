"""Flat stochastic layers around an encoder and a decoder (MLP or convolutional).

Every latent-variable network of jaxae (these two and ``nets.hierarchical``) has the
same four methods, which the families (jaxae.families) use:

- ``__call__(x, eps, cond)`` -> (decoder output, KL per latent unit (B, U), code): the
  training pass; x (B, H, W, C) is the encoder's input, eps (B, noise_dim) the
  standard-normal noise of the reparameterisation (zeros: the deterministic code);
  KL terms are closed form where they can be.
- ``sample_and_score(x, eps, cond)`` with eps (B, S, noise_dim) -> (decoder outputs
  (B, S, ...), log p(z) - log q(z|x) (B, S)): the importance-sampling pass.
- ``encode(x, cond)`` -> (mean, logvar) of the top-level code; ``decode(z, cond)``.

``cond`` is an optional condition (jaxae.conditioning): the one-hot label (B, K) or the
low-resolution image (B, h, w, C); the encoder and decoder decide how to take it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist


def _repeat(cond: jax.Array | None, repeats: int) -> jax.Array | None:
    return None if cond is None else jnp.repeat(cond, repeats, axis=0)


class OneLayerNet(nn.Module):
    """One stochastic layer: q(z|x) = N(mean, diag var) from the encoder, p(z) = N(0, I),
    p(x|z) from the decoder."""

    encoder: nn.Module
    decoder: nn.Module

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decoder(z, cond), dist.gaussian_kl(mean, logvar), mean

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps                    # (B, S, D)
        out = self.decoder(z.reshape(-1, z.shape[-1]), _repeat(cond, z.shape[1]))
        log_ratio = dist.standard_normal_log_prob(z) - dist.diag_gaussian_log_prob(z, mean[:, None], logvar[:, None])
        return out.reshape(*z.shape[:2], *out.shape[1:]), log_ratio

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x, cond)

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        return self.decoder(z, cond)


class TwoLayerNet(nn.Module):
    """Two stochastic layers (Burda et al. 2015): q(z1|x) q(z2|z1) and p(z2) p(z1|z2) p(x|z1),
    all diagonal Gaussians but the likelihood. The noise is eps = [eps1, eps2]
    (noise_dim = D1 + D2) and the code is z2's.

    x_encoder: x -> q(z1|x); z_encoder: z1 -> q(z2|z1); z_decoder: z2 -> p(z1|z2);
    x_decoder: z1 -> p(x|z1). The KL per unit is [log q(z1|x) - log p(z1|z2) for the
    drawn z1 (one-sample estimate, per dim), KL(q(z2|z1) || N(0, I)) in closed form].
    """

    x_encoder: nn.Module
    z_encoder: nn.Module
    z_decoder: nn.Module
    x_decoder: nn.Module
    bottom_dim: int

    def _sample(self, x, eps, cond):
        """eps (B, S, D1 + D2) -> z1, z2 and every layer's (mean, logvar)."""
        m1, lv1 = self.x_encoder(x, cond)
        z1 = m1[:, None] + jnp.exp(0.5 * lv1)[:, None] * eps[..., :self.bottom_dim]   # (B, S, D1)
        flat_cond = _repeat(cond, eps.shape[1])
        m2, lv2 = self.z_encoder(z1.reshape(-1, self.bottom_dim), flat_cond)
        z2 = m2 + jnp.exp(0.5 * lv2) * eps[..., self.bottom_dim:].reshape(m2.shape)    # (B*S, D2)
        pm1, plv1 = self.z_decoder(z2, flat_cond)
        out = self.x_decoder(z1.reshape(-1, self.bottom_dim), flat_cond)
        return z1, z2, (m1, lv1), (m2, lv2), (pm1, plv1), out

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        z1, _, (m1, lv1), (m2, lv2), (pm1, plv1), out = self._sample(x, eps[:, None], cond)
        z1 = z1[:, 0]
        # log q(z1|x) - log p(z1|z2) per dim (one sample): with z1 = m1 + std1 * eps1 the
        # quadratic term of q is eps1^2 / 2.
        kl1 = 0.5 * (plv1 + jnp.square(z1 - pm1) * jnp.exp(-plv1) - lv1 - jnp.square(eps[:, :self.bottom_dim]))
        return out, jnp.concatenate([kl1, dist.gaussian_kl(m2, lv2)], axis=-1), m2

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        batch, samples = eps.shape[:2]
        z1, z2, (m1, lv1), (m2, lv2), (pm1, plv1), out = self._sample(x, eps, cond)
        z1_flat = z1.reshape(-1, self.bottom_dim)
        log_ratio = (dist.standard_normal_log_prob(z2) + dist.diag_gaussian_log_prob(z1_flat, pm1, plv1)
                     - dist.diag_gaussian_log_prob(z2, m2, lv2)).reshape(batch, samples)
        log_ratio = log_ratio - dist.diag_gaussian_log_prob(z1, m1[:, None], lv1[:, None])
        return out.reshape(batch, samples, *out.shape[1:]), log_ratio

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        m1, _ = self.x_encoder(x, cond)
        return self.z_encoder(m1, cond)

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        pm1, _ = self.z_decoder(z, cond)
        return self.x_decoder(pm1, cond)
