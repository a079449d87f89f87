"""A gated PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN
decoders") over a grid of discrete codes: the autoregressive prior of ``vqvae``.

Positions are in raster order: (r, c) precedes (r', c') when r < r', or r = r' and c < c'.
Two stacks keep the logits at a position a function of the earlier positions only, with
no blind spot:

- the vertical stack v sees, at (r, c), rows < r only: its first layer's k x k kernel keeps
  the taps above the centre row, later layers the taps up to the centre row (of v, which
  is already strictly above);
- the horizontal stack h sees, at (r, c), row r at columns < c: its first layer's 1 x k
  kernel keeps the taps left of the centre (mask type A), later layers the taps up to the
  centre (type B, of h), plus v at (r, c) through a 1 x 1 convolution.

Each layer's activation is the gate tanh(a) * sigmoid(b); h layers after the first are
residual. ``dtype`` is the compute dtype (params stay float32); logits are float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxae.nets.mlp import widen

MASKS = ("v_first", "v", "h_first", "h")


def causal_mask(kernel_size: tuple[int, int], kind: str) -> np.ndarray:
    """The (kh, kw) 0/1 taps a masked kernel keeps, its centre at (kh // 2, kw // 2): ``v_first``
    the rows above the centre, ``v`` the rows up to and including the centre's, ``h_first``
    the centre row left of the centre, ``h`` the centre row up to and including the centre."""
    kh, kw = kernel_size
    rows, cols = np.arange(kh)[:, None] - kh // 2, np.arange(kw)[None, :] - kw // 2
    keep = {"v_first": rows < 0, "v": rows <= 0, "h_first": (rows == 0) & (cols < 0),
            "h": (rows == 0) & (cols <= 0)}[kind]
    return np.broadcast_to(keep, (kh, kw)).astype(np.float32)


class MaskedConv(nn.Module):
    """A stride-1 'SAME' convolution whose kernel is multiplied by :func:`causal_mask`."""

    features: int
    kernel_size: tuple[int, int]
    kind: str
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel = kernel * causal_mask(self.kernel_size, self.kind)[:, :, None, None]
        dtype = self.dtype or x.dtype
        y = jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(dtype)


def gate(x: jax.Array) -> jax.Array:
    """(..., 2F) -> tanh(first half) * sigmoid(second half), (..., F)."""
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks: (v, h) -> (v', h'), each (B, H, W, channels)."""

    channels: int
    first: bool
    kernel: int = 3
    dtype: Any = None

    @nn.compact
    def __call__(self, v: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        k, width = self.kernel, 2 * self.channels
        v_kind, h_kind = ("v_first", "h_first") if self.first else ("v", "h")
        v_pre = MaskedConv(width, (k, k), v_kind, self.dtype)(v)
        h_pre = MaskedConv(width, (1, k), h_kind, self.dtype)(h) + nn.Conv(width, (1, 1), dtype=self.dtype)(v_pre)
        h_out = nn.Conv(self.channels, (1, 1), dtype=self.dtype)(gate(h_pre))
        return gate(v_pre), h_out if self.first else h + h_out


class PixelCNN(nn.Module):
    """One-hot codes (B, H, W, num_codes) -> logits (B, H, W, num_codes) of each position's code
    given the codes before it in raster order (the input at a position and after it is
    never read: the logits at (0, 0) are the learned marginal of the first code)."""

    num_codes: int
    channels: int = 64
    num_layers: int = 6
    kernel: int = 3
    dtype: Any = None

    @nn.compact
    def __call__(self, one_hot: jax.Array) -> jax.Array:
        v = h = nn.Dense(self.channels, use_bias=False, dtype=self.dtype)(one_hot)   # the codes' embeddings
        for layer in range(self.num_layers):
            v, h = GatedLayer(self.channels, layer == 0, self.kernel, self.dtype)(v, h)
        h = nn.relu(nn.Conv(self.channels, (1, 1), dtype=self.dtype)(nn.relu(h)))
        return widen(nn.Conv(self.num_codes, (1, 1), dtype=self.dtype)(h), self.dtype)


def sample_codes(logits_fn, rng: jax.Array, num: int, grid: tuple[int, int], num_codes: int,
                 temperature: float | jax.Array = 1.0) -> jax.Array:
    """Draws num code grids int32 (num, H, W) position by position in raster order: at position
    i = r W + c, code = categorical(fold_in(rng, i), logits[:, r, c] / temperature), the logits
    ``logits_fn(one_hot(codes so far))`` (num, H, W, num_codes) of the causal network. One
    ``lax.fori_loop`` over the H W positions."""
    height, width = grid

    def draw(i, codes):
        r, c = i // width, i % width
        logits = logits_fn(jax.nn.one_hot(codes, num_codes))[:, r, c]
        return codes.at[:, r, c].set(jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature))

    return jax.lax.fori_loop(0, height * width, draw, jnp.zeros((num, height, width), jnp.int32))
