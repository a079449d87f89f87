"""Device-side input processing: per-example keys, the epoch order, and turning uint8
images into the model's input, with the training-only augmentation and corruption.

Randomness is per example: each example's key is fold_in(step key, global index of the
example in the batch) (:func:`example_keys`), and it is split by fold_in again:
fold 0 turns the image into model input (binarization / dequantization), fold 1 is the
model's (its latent noise), fold 2 the denoising corruption, fold 3 the random
horizontal flip, fold 4 the random crop, fold 5 the prior draws of the MMD losses. So
every way of running a step (one device, a mesh, pmap) draws the same numbers for the
same global batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae.data import InputSpec

# Evaluation randomness (binarization, dequantization, posterior samples) uses this
# fixed key, independent of the run's seed, so numbers compare across runs.
EVAL_KEY_SEED = 20111125
# Per-example key folds: the input's binarization, the model's posterior noise, the
# denoising corruption, the flip and crop augmentations, and prior draws a loss compares q(z) with.
INPUT_FOLD, MODEL_FOLD, CORRUPTION_FOLD, FLIP_FOLD, CROP_FOLD, PRIOR_FOLD = 0, 1, 2, 3, 4, 5


def fold(keys: jax.Array, i: int) -> jax.Array:
    """Per-example keys (B,) -> fold_in(key, i) of each."""
    return jax.vmap(jax.random.fold_in, (0, None))(keys, i)


def to_model_input(images: jax.Array, keys: jax.Array, spec: InputSpec) -> jax.Array:
    """uint8 (B, H, W, C) and per-example keys (B,) -> float32 (B, H, W, C) model input."""
    x = images.astype(jnp.float32)
    if spec.mode == "binary":
        return x
    if spec.mode == "grey":
        return x / 255.0
    if spec.mode == "dynamic":
        draw = jax.vmap(lambda k, p: jax.random.bernoulli(k, p).astype(jnp.float32))
        return draw(keys, x / 255.0)
    if spec.mode == "dequantize":
        noise = jax.vmap(lambda k: jax.random.uniform(k, spec.image_shape))(keys)
        return (x + noise) / 256.0
    raise ValueError(f"unknown input mode {spec.mode!r}")


def corrupt(x: jax.Array, keys: jax.Array, kind: str, level: float) -> jax.Array:
    """Denoising corruption of model input x (B, H, W, C) in [0, 1], one key per example.

    ``flip``: each pixel becomes 1 - x with probability ``level``; ``gaussian``: x plus
    N(0, level^2) noise, clipped to [0, 1]; ``mask``: each pixel is zeroed with
    probability ``level``; ``none``: x unchanged.
    """
    if kind == "none":
        return x
    shape = x.shape[1:]
    if kind == "flip":
        hit = jax.vmap(lambda k: jax.random.bernoulli(k, level, shape))(keys)
        return jnp.where(hit, 1.0 - x, x)
    if kind == "gaussian":
        noise = jax.vmap(lambda k: jax.random.normal(k, shape))(keys)
        return jnp.clip(x + level * noise, 0.0, 1.0)
    if kind == "mask":
        hit = jax.vmap(lambda k: jax.random.bernoulli(k, level, shape))(keys)
        return jnp.where(hit, 0.0, x)
    raise ValueError(f"unknown corruption {kind!r}")


def random_hflip(x: jax.Array, keys: jax.Array) -> jax.Array:
    """Flips each example of x (B, H, W, C) left-right with probability 1/2; keys: one per example (B,)."""
    flip = jax.vmap(jax.random.bernoulli)(keys)
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)


def crop_padding(image_shape: tuple[int, int, int]) -> int:
    """Pixels :func:`random_crop` pads each side with: 1/8 of the shorter side, rounded down
    (4 for 32 x 32 as in common CIFAR practice; 0, no crop, below 8 x 8)."""
    return min(image_shape[:2]) // 8


def random_crop(images: jax.Array, keys: jax.Array, pad: int) -> jax.Array:
    """Shifts each image at random: (B, H, W, C) of any dtype, keys (B,) -> (B, H, W, C).

    Each image is padded by ``pad`` pixels on every side by reflection (no black bands for
    the likelihood to learn; ``pad`` < H, W), then the H x W window at offset (dy, dx),
    drawn uniformly from {0, ..., 2 pad}^2 with the example's key, is kept.
    """
    if pad == 0:
        return images
    _, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")

    def crop(image, key):
        dy, dx = jax.random.randint(key, (2,), 0, 2 * pad + 1)
        return jax.lax.dynamic_slice(image, (dy, dx, 0), (height, width, channels))

    return jax.vmap(crop)(padded, keys)


def example_keys(rng: jax.Array, batch_size: int, offset: jax.Array | int = 0,
                 axis_name: str | None = None) -> jax.Array:
    """One PRNG key per example: fold_in(rng, global index of the example in the batch).

    Under ``pmap`` with ``axis_name`` each device holds rows [d * b, (d + 1) * b) of the
    global batch, so the keys (and every random draw) match a single-device run.
    """
    start = offset if axis_name is None else offset + jax.lax.axis_index(axis_name) * batch_size
    return jax.vmap(jax.random.fold_in, (None, 0))(rng, start + jnp.arange(batch_size))


def epoch_permutation(data_key: jax.Array, epoch: jax.Array | int, num_examples: int) -> jax.Array:
    """The example order of one epoch: a permutation of range(num_examples), from the seed."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def eval_key() -> jax.Array:
    return jax.random.key(EVAL_KEY_SEED)


def scaled(images: jax.Array, spec: InputSpec) -> jax.Array:
    """uint8 images -> [0, 1] floats without randomness (grey levels for 8-bit data): what the
    encoder sees when reconstructing, interpolating or picturing inputs."""
    return images.astype(jnp.float32) / (1.0 if spec.mode == "binary" else 255.0)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """uint8 batches -> model batches, on the device (hashable: a jit-static part of the step).

    ``__call__(batch, keys, train)``: batch {"image": uint8 (B, H, W, C), "label"?: int (B,)},
    keys (B,) -> {"x": float32 (B, H, W, C), the image the likelihood scores; "x_in": what
    the encoder sees; "label"?}. In training the uint8 image is shifted by a random crop
    (``random_crop``, :func:`random_crop` with :func:`crop_padding`), before binarization so
    every pixel gets its own draw, and flipped left-right at random (``hflip``); the
    augmented image is the data. ``x_in`` is ``x`` corrupted by ``input_noise``
    (denoising); in evaluation neither augmentation applies and ``x_in`` is ``x``.
    """

    spec: InputSpec
    hflip: bool = False
    input_noise: str = "none"
    noise_level: float = 0.0
    random_crop: bool = False

    def __call__(self, batch: dict, keys: jax.Array, train: bool = False) -> dict:
        image = batch["image"]
        if train and self.random_crop:
            image = random_crop(image, fold(keys, CROP_FOLD), crop_padding(self.spec.image_shape))
        x = to_model_input(image, fold(keys, INPUT_FOLD), self.spec)
        if train and self.hflip:
            x = random_hflip(x, fold(keys, FLIP_FOLD))
        x_in = corrupt(x, fold(keys, CORRUPTION_FOLD), self.input_noise, self.noise_level) if train else x
        out = {"x": x, "x_in": x_in}
        if "label" in batch:
            out["label"] = batch["label"]
        return out
