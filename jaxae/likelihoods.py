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

from jaxae.config import Config


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """Independent Bernoulli per pixel; the decoder emits logits l.

    binary_targets: the targets are exactly 0 or 1 (binarized data), so
    log p(x|l) = log sigmoid((2x - 1) l): one transcendental per pixel, exact. Otherwise
    (grey levels in [0, 1] scored as soft targets) x log sigmoid(l) + (1 - x) log sigmoid(-l)
    = x l + log sigmoid(-l). Both are ~4x faster on CPU than the textbook two-log form, which
    matters for the IWAE bound (k = 5000 decoder outputs per image).
    """

    binary_targets: bool = True
    params_per_channel: int = 1

    def log_prob(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """out, x: (..., H, W, C) logits and targets in [0, 1] (broadcastable) -> (...) nats."""
        if self.binary_targets:
            return jnp.sum(jax.nn.log_sigmoid((2.0 * x - 1.0) * out), axis=(-3, -2, -1))
        return jnp.sum(x * out + jax.nn.log_sigmoid(-out), axis=(-3, -2, -1))

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
        return Bernoulli(binary_targets=config.binarize != "none")
    return Gaussian(scale=config.gaussian_scale)
