"""Drawing images from a trained model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnums=(0, 3))
def sample_prior(model, params, rng: jax.Array, num_samples: int, temperature: float = 1.0) -> jax.Array:
    """Decodes z ~ N(0, temperature^2 I) into mean images, float32 (num_samples, H, W, C) in [0, 1]."""
    z = temperature * jax.random.normal(rng, (num_samples, model.latent_dim))
    return model.decode_mean(params, z)


@functools.partial(jax.jit, static_argnums=0)
def reconstruct(model, params, images: jax.Array) -> jax.Array:
    """uint8 images (B, H, W, C) -> reconstructions (B, H, W, C) in [0, 1]."""
    return model.reconstruct(params, images)


def interleave_rows(inputs: jax.Array, outputs: jax.Array, num_cols: int) -> jax.Array:
    """Stacks rows so each row of ``inputs`` sits above the matching row of ``outputs``.

    inputs, outputs: (N, H, W, C) with N a multiple of num_cols -> (2N, H, W, C).
    """
    n = inputs.shape[0]
    a = inputs.reshape(n // num_cols, num_cols, *inputs.shape[1:])
    b = outputs.reshape(n // num_cols, num_cols, *outputs.shape[1:])
    return jnp.stack([a, b], axis=1).reshape(2 * n, *inputs.shape[1:])
