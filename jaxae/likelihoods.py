"""Pixel likelihoods p(x | z): how a decoder's output tensor scores an image.

A likelihood is a small frozen (hashable, jit-static) object. The decoder emits
``params_per_channel * C`` numbers per pixel; the likelihood turns them into a
log-probability in nats per image (summed over pixels) and a mean image.

Units. Bernoulli on binary data is a true discrete log-likelihood. The Gaussian
scores 8-bit data that was uniformly dequantized to x = (k + u) / 256 with
u ~ U[0, 1): its log-density on the [0, 1] scale minus D * log(256) is a lower bound
(in expectation over u) on the log-probability of the 8-bit image, in nats, which
is how the literature reports continuous likelihoods on discrete images.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from jaxae.config import Config


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """Independent Bernoulli per pixel; the decoder emits logits."""

    params_per_channel: int = 1

    def log_prob(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """out, x: (..., H, W, C) logits and targets in [0, 1] (broadcastable) -> (...) nats."""
        return -jnp.sum(optax.sigmoid_binary_cross_entropy(out, x), axis=(-3, -2, -1))

    def mean(self, out: jax.Array) -> jax.Array:
        """(B, H, W, C) logits -> (B, H, W, C) probabilities in [0, 1]."""
        return jax.nn.sigmoid(out)


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Independent Gaussian per pixel on dequantized 8-bit data.

    scale: fixed standard deviation on the [0, 1] scale, or None to learn one per
    pixel (the decoder then also emits a log-scale, clipped to [-7, 2]).
    """

    scale: float | None = None

    @property
    def params_per_channel(self) -> int:
        return 1 if self.scale is not None else 2

    def _mean_logscale(self, out: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.scale is not None:
            return out, jnp.full_like(out, math.log(self.scale))
        mean, raw = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(raw, -7.0, 2.0)

    def log_prob(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """out: (..., H, W, C*k); x: (..., H, W, C) dequantized in [0, 1] -> (...) nats of the 8-bit image."""
        mean, log_scale = self._mean_logscale(out)
        density = -0.5 * (math.log(2 * math.pi) + 2 * log_scale + jnp.square((x - mean) * jnp.exp(-log_scale)))
        num_dims = math.prod(x.shape[-3:])
        return jnp.sum(density, axis=(-3, -2, -1)) - num_dims * math.log(256.0)

    def mean(self, out: jax.Array) -> jax.Array:
        return jnp.clip(self._mean_logscale(out)[0], 0.0, 1.0)


Likelihood = Bernoulli | Gaussian


def make_likelihood(config: Config) -> Likelihood:
    if config.likelihood == "bernoulli":
        return Bernoulli()
    return Gaussian(scale=config.gaussian_scale)
