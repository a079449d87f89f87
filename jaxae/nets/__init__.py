"""Networks (Flax linen), built from plain arguments.

- ``mlp``, ``conv``: encoders map images (B, H, W, C) to the mean and log-variance of a
  diagonal Gaussian, each (B, latent_dim); decoders map latents (B, latent_dim) to
  likelihood parameters (B, H, W, K), K = likelihood.output_channels(C).
- ``stochastic``: one or two flat stochastic layers around an encoder and a decoder.
- ``hierarchical``: the VDVAE/NVAE-style hierarchical network.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxae.errors import ConfigError
from jaxae.nets.conv import ConvDecoder, ConvEncoder, GridDecoder, GridEncoder
from jaxae.nets.hierarchical import HierarchicalNet, HVAEArch
from jaxae.nets.mlp import MLPDecoder, MLPEncoder
from jaxae.nets.stochastic import OneLayerNet, TwoLayerNet


def encoder_decoder(kind: str, image_shape: tuple[int, int, int], out_channels: int, latent_dim: int, *,
                    hidden_dims: Sequence[int] = (), channels: Sequence[int] = (), activation: str = "relu",
                    dtype: str = "float32", grid: bool = False) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of ``kind`` (``mlp``, ``conv`` or ``resnet``) for images of
    ``image_shape`` (H, W, C); the decoder emits ``out_channels`` likelihood parameters
    per pixel. Layers compute in ``dtype`` with float32 params and float32 outputs.
    ``grid`` (conv and resnet): the code is a grid of ``latent_dim``-vectors, one per
    (H / 2^S, W / 2^S) position for S = len(channels) stages (GridEncoder, GridDecoder)."""
    out_shape = (*image_shape[:2], out_channels)
    compute = compute_dtype(dtype)
    if kind == "mlp":
        return (MLPEncoder(tuple(hidden_dims), latent_dim, activation, compute),
                MLPDecoder(tuple(reversed(hidden_dims)), out_shape, activation, compute))
    stride = 2 ** len(channels)
    height, width = image_shape[:2]
    if height % stride or width % stride:
        raise ConfigError(
            f"--arch {kind} with {len(channels)} stride-2 stages needs image sides divisible "
            f"by {stride}; got {height}x{width} (use fewer --channels or --arch mlp)")
    residual = kind == "resnet"
    if grid:
        return (GridEncoder(tuple(channels), latent_dim, activation, residual, compute),
                GridDecoder(tuple(reversed(channels)), out_shape, activation, residual, compute))
    return (ConvEncoder(tuple(channels), latent_dim, activation, residual, compute),
            ConvDecoder(tuple(reversed(channels)), out_shape, activation, residual, compute))


def compute_dtype(dtype: str) -> jnp.dtype | None:
    """A dtype name as the layers' compute dtype: None for float32 (compute in the params'
    own precision, so float64 gradient checks stay float64), else the jnp dtype."""
    return None if dtype == "float32" else jnp.dtype(dtype)


__all__ = ["ConvDecoder", "ConvEncoder", "GridDecoder", "GridEncoder",
           "HVAEArch", "HierarchicalNet", "MLPDecoder", "MLPEncoder", "OneLayerNet",
           "TwoLayerNet", "compute_dtype", "encoder_decoder"]
