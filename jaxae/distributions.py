"""Diagonal Gaussians: log-density and the closed-form KL that every model uses.

Shapes: ``diag_gaussian_log_prob`` and ``standard_normal_log_prob`` act on the last axis
and reduce it, (..., D) -> (...); ``gaussian_log_prob`` and ``gaussian_kl`` are elementwise
(no reduction), so a caller sums them over whatever axes make up one latent unit or group.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(x; mean, exp(logvar)), elementwise (shapes broadcast; nothing is reduced)."""
    return -0.5 * (LOG_2PI + logvar + jnp.square(x - mean) * jnp.exp(-logvar))


def diag_gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(x; mean, diag(exp(logvar))), summed over the last axis. (..., D) -> (...)."""
    return jnp.sum(gaussian_log_prob(x, mean, logvar), axis=-1)


def standard_normal_log_prob(x: jax.Array) -> jax.Array:
    """log N(x; 0, I), summed over the last axis. (..., D) -> (...)."""
    return -0.5 * jnp.sum(LOG_2PI + jnp.square(x), axis=-1)


def gaussian_kl(q_mean: jax.Array, q_logvar: jax.Array, p_mean: jax.Array | float = 0.0,
                p_logvar: jax.Array | float = 0.0) -> jax.Array:
    """KL(N(q_mean, exp(q_logvar)) || N(p_mean, exp(p_logvar))) in nats, elementwise, closed form:

        0.5 * (exp(q_logvar - p_logvar) + (q_mean - p_mean)^2 exp(-p_logvar) - 1 - (q_logvar - p_logvar)).

    The default prior is N(0, 1). Shapes broadcast; nothing is reduced.
    """
    if isinstance(p_mean, float) and isinstance(p_logvar, float) and p_mean == 0.0 and p_logvar == 0.0:
        return 0.5 * (jnp.exp(q_logvar) + jnp.square(q_mean) - 1.0 - q_logvar)
    log_ratio = q_logvar - p_logvar
    return 0.5 * (jnp.exp(log_ratio) + jnp.square(q_mean - p_mean) * jnp.exp(-p_logvar) - 1.0 - log_ratio)
