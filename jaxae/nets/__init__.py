"""Encoder/decoder networks (Flax linen). Encoders map images (B, H, W, C) to the
mean and log-variance of a diagonal Gaussian posterior, each (B, latent_dim);
decoders map latents (B, latent_dim) to likelihood parameters (B, H, W, K), K =
likelihood.output_channels(C)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxae.config import Config, ConfigError
from jaxae.nets.conv import ConvDecoder, ConvEncoder
from jaxae.nets.mlp import MLPDecoder, MLPEncoder


def make_encoder_decoder(config: Config, image_shape: tuple[int, int, int],
                         out_channels: int) -> tuple[nn.Module, nn.Module]:
    """Builds the encoder and decoder of ``config.arch`` for images of ``image_shape`` (H, W, C);
    the decoder emits ``out_channels`` likelihood parameters per pixel. Layers compute in
    ``config.dtype`` with float32 params and float32 outputs."""
    out_shape = (*image_shape[:2], out_channels)
    dtype = compute_dtype(config)
    if config.arch.startswith("mlp"):
        hidden, _, act = config.mlp_settings()
        return (MLPEncoder(hidden, config.latent_dim, act, dtype),
                MLPDecoder(tuple(reversed(hidden)), out_shape, act, dtype))
    act = config.activation
    stride = 2 ** len(config.channels)
    height, width = image_shape[:2]
    if height % stride or width % stride:
        raise ConfigError(
            f"--arch {config.arch} with {len(config.channels)} stride-2 stages needs image sides divisible "
            f"by {stride}; got {height}x{width} (use fewer --channels or --arch mlp)")
    residual = config.arch == "resnet"
    return (ConvEncoder(config.channels, config.latent_dim, act, residual, dtype),
            ConvDecoder(tuple(reversed(config.channels)), out_shape, act, residual, dtype))


def compute_dtype(config: Config) -> jnp.dtype | None:
    """``config.dtype`` as the layers' compute dtype: None for float32 (compute in the
    params' own precision), else the jnp dtype (bfloat16)."""
    return None if config.dtype == "float32" else jnp.dtype(config.dtype)


__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "compute_dtype", "make_encoder_decoder"]
