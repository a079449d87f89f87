"""Drawing images from a trained model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxae import inputs, priors
from jaxae.priors import FittedPrior


@functools.partial(jax.jit, static_argnums=(0, 3), static_argnames=("sharding",))
def sample_prior(model, params, rng: jax.Array, num_samples: int, temperature: float | jax.Array = 1.0,
                 labels: jax.Array | None = None, prior: FittedPrior | None = None,
                 sharding: jax.sharding.NamedSharding | None = None) -> jax.Array:
    """Decodes latents into mean images, float32 (num_samples, H, W, C) in [0, 1].

    Latents: the family's prior draws (``model.prior_draws``: N(0, temperature^2 I) of
    size ``model.prior_dim`` unless the family's prior is another), or from a fitted
    prior (jaxae.priors) with its covariance scaled by temperature^2. ``temperature``
    may be a (prior_dim,) vector (``model.noise_scale`` of per-group temperatures).
    ``labels`` (num_samples,) pick the classes of a conditional model. ``sharding``: split
    the latents' batch axis over its devices (the params must then live on its mesh, e.g.
    replicated); the images do not change.
    """
    if prior is None:
        z = model.prior_draws(params, rng, num_samples, temperature)
    else:
        z = priors.sample(prior, rng, num_samples, temperature)
    if sharding is not None:
        z = jax.lax.with_sharding_constraint(z, sharding)
    return model.decode(params, z, labels)


@functools.partial(jax.jit, static_argnums=0)
def reconstruct(model, params, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """uint8 images (B, H, W, C) -> reconstructions (B, H, W, C) in [0, 1], decoded from the
    posterior mean of the images' grey levels (no random binarization)."""
    return model.decode(params, encode(model, params, images, labels), labels)


def encode(model, params, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """uint8 images (B, H, W, C) -> posterior means (B, latent_dim) of their grey levels."""
    return model.encode(params, inputs.scaled(images, model.spec), labels)[0]


@functools.partial(jax.jit, static_argnums=(0, 4))
def interpolate(model, params, images: jax.Array, labels: jax.Array | None, num_frames: int) -> jax.Array:
    """Decodes num_frames codes evenly spaced from the posterior mean of images[0] to images[1].

    images: uint8 (2, H, W, C) -> (num_frames, H, W, C); a conditional model uses labels[0].
    """
    codes = encode(model, params, images, labels)
    t = jnp.linspace(0.0, 1.0, num_frames)[:, None]
    z = (1.0 - t) * codes[0] + t * codes[1]
    frame_labels = None if labels is None else jnp.full((num_frames,), labels[0])
    return model.decode(params, z, frame_labels)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def traverse(model, params, image: jax.Array, labels: jax.Array | None, num_dims: int, num_steps: int,
             radius: float = 3.0) -> jax.Array:
    """Varies one latent dim at a time around an image's code, from -radius to +radius.

    image: uint8 (1, H, W, C) -> (num_dims * num_steps, H, W, C): row d varies dim d.
    """
    code = encode(model, params, image, labels)[0]
    offsets = jnp.linspace(-radius, radius, num_steps)
    dims = jnp.arange(num_dims)
    z = code + jnp.eye(model.latent_dim)[dims][:, None, :] * offsets[None, :, None]   # (dims, steps, D)
    frame_labels = None if labels is None else jnp.full((num_dims * num_steps,), labels[0])
    return model.decode(params, z.reshape(-1, model.latent_dim), frame_labels)


def interleave_rows(inputs: jax.Array, outputs: jax.Array, num_cols: int) -> jax.Array:
    """Stacks rows so each row of ``inputs`` sits above the matching row of ``outputs``.

    inputs, outputs: (N, H, W, C) with N a multiple of num_cols -> (2N, H, W, C).
    """
    n = inputs.shape[0]
    a = inputs.reshape(n // num_cols, num_cols, *inputs.shape[1:])
    b = outputs.reshape(n // num_cols, num_cols, *outputs.shape[1:])
    return jnp.stack([a, b], axis=1).reshape(2 * n, *inputs.shape[1:])
