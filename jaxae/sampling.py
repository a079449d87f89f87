"""Drawing images from a trained model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxae import hardware, inputs, priors
from jaxae.priors import FittedPrior


@functools.partial(hardware.jit, static_argnums=(0, 3), static_argnames=("sharding",))
def sample_prior(model, params, rng: jax.Array, num_samples: int, temperature: float | jax.Array = 1.0,
                 given: jax.Array | None = None, prior: FittedPrior | None = None,
                 sharding: jax.sharding.NamedSharding | None = None) -> jax.Array:
    """Decodes latents into mean images, float32 (num_samples, H, W, C) in [0, 1].

    Latents: the family's prior draws (``model.prior_draws``: N(0, temperature^2 I) of
    size ``model.prior_dim`` unless the family's prior is another), or from a fitted
    prior (jaxae.priors) with its covariance scaled by temperature^2. ``temperature``
    may be a (prior_dim,) vector (``model.noise_scale`` of per-group temperatures).
    ``given``: the condition of a conditional model, one per sample (``model.decode``):
    labels (num_samples,), or low-res images (num_samples, H/F, W/F, C). ``sharding``: split
    the latents' batch axis over its devices (the params must then live on its mesh, e.g.
    replicated); the images do not change.
    """
    if prior is None:
        z = model.prior_draws(params, rng, num_samples, temperature)
    else:
        z = priors.sample(prior, rng, num_samples, temperature)
    if sharding is not None:
        z = jax.lax.with_sharding_constraint(z, sharding)
    return model.decode(params, z, given)


@functools.partial(hardware.jit, static_argnums=0)
def reconstruct(model, params, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """uint8 images (B, H, W, C) -> reconstructions (B, H, W, C) in [0, 1] of the images' grey
    levels (no random binarization) under their condition: the family's ``reconstruct``, every
    stochastic layer at its posterior's deterministic code."""
    return model.reconstruct(params, inputs.scaled(images, model.spec), labels)


def given_of(model, images: jax.Array, labels: jax.Array | None, repeats: int = 0) -> jax.Array | None:
    """The condition of uint8 images (B, H, W, C) (``model.given`` of their grey levels), or
    that of the first image repeated ``repeats`` times when repeats > 0."""
    given = model.given(inputs.scaled(images, model.spec), labels)
    if given is None or not repeats:
        return given
    return jnp.repeat(given[:1], repeats, axis=0)


def encode(model, params, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """uint8 images (B, H, W, C) -> posterior means (B, latent_dim) of their grey levels."""
    return model.encode(params, inputs.scaled(images, model.spec), labels)[0]


@functools.partial(hardware.jit, static_argnums=(0, 4))
def interpolate(model, params, images: jax.Array, labels: jax.Array | None, num_frames: int) -> jax.Array:
    """Decodes num_frames codes evenly spaced from the posterior mean of images[0] to images[1].

    images: uint8 (2, H, W, C) -> (num_frames, H, W, C); a conditional model uses images[0]'s
    condition (its label or low-res image).
    """
    codes = encode(model, params, images, labels)
    t = jnp.linspace(0.0, 1.0, num_frames)[:, None]
    z = (1.0 - t) * codes[0] + t * codes[1]
    return model.decode(params, z, given_of(model, images, labels, num_frames))


@functools.partial(hardware.jit, static_argnums=(0, 4, 5))
def traverse(model, params, image: jax.Array, labels: jax.Array | None, num_dims: int, num_steps: int,
             radius: float = 3.0) -> jax.Array:
    """Varies one latent dim at a time around an image's code, from -radius to +radius.

    image: uint8 (1, H, W, C) -> (num_dims * num_steps, H, W, C): row d varies dim d.
    """
    code = encode(model, params, image, labels)[0]
    offsets = jnp.linspace(-radius, radius, num_steps)
    dims = jnp.arange(num_dims)
    z = code + jnp.eye(model.latent_dim)[dims][:, None, :] * offsets[None, :, None]   # (dims, steps, D)
    return model.decode(params, z.reshape(-1, model.latent_dim), given_of(model, image, labels, num_dims * num_steps))


def beside(first: jax.Array, images: jax.Array, num_cols: int, fill: float = 0.5) -> jax.Array:
    """Rows of ``num_cols`` images, each row led by ``first``: first (1, H, W, C), images
    (N, H, W, C) -> (rows * (num_cols + 1), H, W, C), the last row completed with images of
    the value ``fill`` (the grid's background)."""
    rows = -(-images.shape[0] // num_cols)
    padded = jnp.concatenate([images, jnp.full((rows * num_cols - images.shape[0], *images.shape[1:]), fill,
                                                images.dtype)])
    grid = padded.reshape(rows, num_cols, *images.shape[1:])
    leads = jnp.broadcast_to(first.astype(images.dtype), (rows, 1, *images.shape[1:]))
    return jnp.concatenate([leads, grid], axis=1).reshape(-1, *images.shape[1:])


def interleave_rows(inputs: jax.Array, outputs: jax.Array, num_cols: int) -> jax.Array:
    """Stacks rows so each row of ``inputs`` sits above the matching row of ``outputs``.

    inputs, outputs: (N, H, W, C) with N a multiple of num_cols -> (2N, H, W, C).
    """
    n = inputs.shape[0]
    a = inputs.reshape(n // num_cols, num_cols, *inputs.shape[1:])
    b = outputs.reshape(n // num_cols, num_cols, *outputs.shape[1:])
    return jnp.stack([a, b], axis=1).reshape(2 * n, *inputs.shape[1:])
