"""Diagonal Gaussians: reparameterised sampling, log-density and closed-form KL.

All functions act on the last axis and reduce it: inputs (..., D) give (...).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def sample_diag_gaussian(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps with eps ~ N(0, I); shapes (D,) for one key."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps


def diag_gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(x; mean, diag(exp(logvar))), summed over the last axis. (..., D) -> (...)."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(x - mean) * jnp.exp(-logvar), axis=-1)


def standard_normal_log_prob(x: jax.Array) -> jax.Array:
    """log N(x; 0, I), summed over the last axis. (..., D) -> (...)."""
    return -0.5 * jnp.sum(LOG_2PI + jnp.square(x), axis=-1)


def kl_diag_gaussian_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in nats, closed form. (..., D) -> (...)."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)
