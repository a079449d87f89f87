"""Training objectives as pure functions of per-example quantities (all in nats).

Each takes the terms a model computed for a batch and returns the scalar loss that
the train step minimises (averaged over the batch, nats per image). The families
(jaxae.families) combine them; nothing here knows the config.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def kl_weight(step: jax.Array | int, beta: float, warmup_steps: int) -> jax.Array:
    """beta, ramped linearly from 0 over the first ``warmup_steps`` steps (0: no ramp)."""
    if not warmup_steps:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)


def elbo_loss(recon: jax.Array, kl_per_dim: jax.Array, weight: jax.Array | float = 1.0,
              free_bits: float = 0.0) -> jax.Array:
    """(beta-)VAE loss: mean(recon) + weight * sum_d max(free_bits, mean_batch KL_d).

    recon: (B,) -log p(x|z); kl_per_dim: (B, D). With weight 1 and no free bits this is
    the negative ELBO. Free bits (Kingma et al. 2016) stop penalising a latent dim's
    batch-averaged KL below ``free_bits`` nats, which keeps units from collapsing.
    """
    kl = jnp.mean(kl_per_dim, axis=0)
    if free_bits:
        kl = jnp.maximum(kl, free_bits)
    return jnp.mean(recon) + weight * jnp.sum(kl)


def iwae_loss(log_weights: jax.Array) -> jax.Array:
    """IWAE loss (Burda et al. 2015): -mean_b [log (1/K) sum_k w_bk], log_weights (B, K).

    With K = 1 this is the single-sample negative ELBO; it tightens as K grows.
    """
    num = log_weights.shape[1]
    return -jnp.mean(jax.nn.logsumexp(log_weights, axis=1) - math.log(num))


def autoencoder_loss(recon: jax.Array, code: jax.Array, code_l2: float = 0.0) -> jax.Array:
    """Deterministic autoencoder: mean(recon) + code_l2 * mean_b ||z_b||^2. recon (B,), code (B, D)."""
    return jnp.mean(recon) + code_l2 * jnp.mean(jnp.sum(jnp.square(code), axis=-1))
