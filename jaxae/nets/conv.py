"""Convolutional encoder and decoder: stride-2 stages, then a dense bottleneck.

With ``residual=True`` (``--arch resnet``) each stage's 3x3 convolution becomes a
pre-activation residual block, x + conv(act(conv(act(x)))), as in ResNet-style VAEs.
``dtype`` is the compute dtype of every layer (params stay float32); outputs are
float32, as in jaxae.nets.mlp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae.nets.mlp import widen

DENSE_WIDTH = 256


def upsample2x(h: jax.Array) -> jax.Array:
    """Depth-to-space: (B, H, W, 4C) -> (B, 2H, 2W, C) ("pixel shuffle", Shi et al. 2016).

    A 3x3 conv to 4C channels followed by this is a learned 2x upsampling like a
    stride-2 transposed conv, but its gradient is an ordinary conv: XLA's CPU gradient
    of ConvTranspose measured ~15x slower than the whole rest of the step.
    """
    b, height, width, c4 = h.shape
    c = c4 // 4
    h = h.reshape(b, height, width, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return h.reshape(b, 2 * height, 2 * width, c)


# The transposed-kernel taps of a 4x4 stride-2 conv (padding 1 each side): input row 2i + p
# gets output row i + d through tap k = _TAPS[p, d] (None: no tap). From y[o] = sum_k
# x[2o + k - 1] w[k]: x[2i] meets y[i] by w[1] and y[i - 1] by w[3]; x[2i + 1] meets y[i + 1]
# by w[0] and y[i] by w[2].
_TAPS = {(0, -1): 3, (0, 0): 1, (1, 0): 2, (1, 1): 0}


def _phase_kernel(kernel: jax.Array) -> jax.Array:
    """A 4x4 stride-2 kernel (4, 4, C, D) -> the 3x3 kernel (3, 3, D, 4C) that maps the output's
    gradient to the input's four 2x2 phases (row parity, column parity, channel), zero where a
    phase has no tap at that offset."""
    zero = jnp.zeros_like(kernel[0, 0].T)
    tap = lambda p, d: _TAPS.get((p, d))  # noqa: E731
    rows = []
    for dy in (-1, 0, 1):
        cols = []
        for dx in (-1, 0, 1):
            phases = [zero if tap(py, dy) is None or tap(px, dx) is None else kernel[tap(py, dy), tap(px, dx)].T
                      for py in (0, 1) for px in (0, 1)]
            cols.append(jnp.concatenate(phases, axis=-1))
        rows.append(jnp.stack(cols))
    return jnp.stack(rows)


def _nhwc_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def _down_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 4x4 stride-2 SAME conv of x (B, H, W, C), H and W even, kernel (4, 4, C, D) -> (B, H/2, W/2, D)."""
    return _nhwc_conv(x, kernel, (2, 2), "SAME")


def _down_conv_fwd(x, kernel):
    return _down_conv(x, kernel), (x, kernel)


def _down_conv_bwd(residuals, grad):
    """The kernel's gradient as XLA computes it; the input's by :func:`_phase_kernel` on CPU,
    where XLA's own (a conv of the 2x-dilated gradient) ran 4x slower than the forward conv."""
    x, kernel = residuals
    conv = lambda x, k: _nhwc_conv(x, k, (2, 2), "SAME")  # noqa: E731
    dkernel = jax.vjp(lambda k: conv(x, k), kernel)[1](grad)[0]
    phased = lambda: upsample2x(_nhwc_conv(grad, _phase_kernel(kernel), (1, 1), "SAME"))  # noqa: E731
    xla = lambda: jax.vjp(lambda x: conv(x, kernel), x)[1](grad)[0]  # noqa: E731
    return jax.lax.platform_dependent(cpu=phased, default=xla), dkernel


_down_conv.defvjp(_down_conv_fwd, _down_conv_bwd)


def down_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
              feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` for ``nn.Conv(conv_general_dilated=...)`` that takes the
    encoder's 4x4 stride-2 SAME convolutions (NHWC, even sides) through :func:`_down_conv`, whose
    input gradient is a stride-1 conv (same parameters, same values up to float rounding);
    anything else goes to ``lax.conv_general_dilated`` unchanged."""
    plain = (rhs.shape[:2] == (4, 4) and tuple(window_strides) == (2, 2) and padding == "SAME"
             and lhs.ndim == 4 and lhs.shape[1] % 2 == 0 and lhs.shape[2] % 2 == 0 and feature_group_count == 1
             and not kwargs and precision is None and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
             and dimension_numbers == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if plain:
        return _down_conv(lhs, rhs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)


class ResidualBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))), channels unchanged."""

    activation: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = getattr(nn, self.activation)
        h = nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype)(act(x))
        return x + nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype)(act(h))


def spatial(cond: jax.Array | None) -> bool:
    """Whether a condition is an image (B, h, w, C), which conv nets take as channels, rather
    than a vector (B, K) they append to the dense layer's input."""
    return cond is not None and cond.ndim == 4


def with_channels(h: jax.Array, cond: jax.Array) -> jax.Array:
    """(B, H, W, D) features and an image condition (B, h, w, C) -> (B, H, W, D + C): the
    condition resized (nearest) to H x W, mapped to [-1, 1] as the inputs are, appended as channels."""
    resized = jax.image.resize(cond, (cond.shape[0], *h.shape[1:3], cond.shape[3]), "nearest")
    return jnp.concatenate([h, (2.0 * resized - 1.0).astype(h.dtype)], axis=-1)


def with_condition_channels(h: jax.Array, cond: jax.Array | None) -> jax.Array:
    """(B, H, W, D) features and an optional condition -> (B, H, W, D + K): an image condition
    as :func:`with_channels`, a vector (B, K) broadcast over H x W; no condition: h."""
    if cond is None:
        return h
    if spatial(cond):
        return with_channels(h, cond)
    planes = jnp.broadcast_to(cond[:, None, None, :].astype(h.dtype), (*h.shape[:3], cond.shape[-1]))
    return jnp.concatenate([h, planes], axis=-1)


def _stage_conv(h: jax.Array, width: int, act, residual: bool, activation: str, dtype: Any) -> jax.Array:
    """The stride-1 part of a stage: a 3x3 conv + act, or a residual block after a width change."""
    if not residual:
        return act(nn.Conv(width, (3, 3), dtype=dtype)(h))
    if h.shape[-1] != width:
        h = nn.Conv(width, (1, 1), dtype=dtype)(h)
    return ResidualBlock(activation, dtype)(h)


def _down_stages(h: jax.Array, channels: Sequence[int], act, residual: bool, activation: str,
                 dtype: Any) -> jax.Array:
    """Features (B, H, W, F) -> (B, H / 2^S, W / 2^S, channels[-1]): per stage a stride-1 conv
    (:func:`_stage_conv`) then a 4x4 stride-2 conv, each followed by ``act``."""
    for width in channels:
        h = _stage_conv(h, width, act, residual, activation, dtype)
        h = act(nn.Conv(width, (4, 4), strides=(2, 2), dtype=dtype, conv_general_dilated=down_conv)(h))
    return h


def _up_stages(h: jax.Array, channels: Sequence[int], act, residual: bool, activation: str, dtype: Any) -> jax.Array:
    """Features (B, h, w, F) -> (B, 2^S h, 2^S w, channels[-1]): per stage a 3x3 conv, depth-to-space
    2x (:func:`upsample2x`) and a stride-1 conv (:func:`_stage_conv`)."""
    for width_out in channels:
        h = act(upsample2x(nn.Conv(4 * width_out, (3, 3), dtype=dtype)(h)))
        h = _stage_conv(h, width_out, act, residual, activation, dtype)
    return h


class ConvEncoder(nn.Module):
    """(B, H, W, C) in [0, 1] and optional condition -> (mean, logvar), each (B, latent_dim).

    Each stage: 3x3 conv stride 1 then 4x4 conv stride 2 (activation), halving H and W. A
    vector condition (B, K) is appended to the dense layer's input; an image condition
    (B, h, w, C) in [0, 1] to the input image as channels (:func:`with_channels`).
    """

    channels: Sequence[int]
    latent_dim: int
    activation: str = "relu"
    residual: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        act = getattr(nn, self.activation)
        h = (2.0 * x - 1.0).astype(self.dtype)
        if spatial(cond):
            h = with_channels(h, cond)
        h = _down_stages(h, self.channels, act, self.residual, self.activation, self.dtype)
        h = h.reshape(h.shape[0], -1)
        if cond is not None and not spatial(cond):
            h = jnp.concatenate([h, cond.astype(h.dtype)], axis=-1)
        h = act(nn.Dense(DENSE_WIDTH, dtype=self.dtype)(h))
        stats = widen(nn.Dense(2 * self.latent_dim, dtype=self.dtype)(h), self.dtype)
        mean, logvar = jnp.split(stats, 2, axis=-1)
        return mean, logvar


class ConvDecoder(nn.Module):
    """(B, latent_dim) and optional condition -> (B, *out_shape); mirrors :class:`ConvEncoder`,
    upsampling each stage 2x with a 3x3 conv and depth-to-space (:func:`upsample2x`). A vector
    condition (B, K) is appended to the latent; an image condition (B, h, w, C) enters as
    channels at the first stage's resolution and again before the last conv, at full size."""

    channels: Sequence[int]
    out_shape: tuple[int, int, int]
    activation: str = "relu"
    residual: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = getattr(nn, self.activation)
        stride = 2 ** len(self.channels)
        height, width = self.out_shape[0] // stride, self.out_shape[1] // stride
        dense = lambda n: nn.Dense(n, dtype=self.dtype)  # noqa: E731
        vector = cond is not None and not spatial(cond)
        h = act(dense(DENSE_WIDTH)(jnp.concatenate([z, cond], axis=-1) if vector else z))
        h = act(dense(height * width * self.channels[0])(h))
        h = h.reshape(z.shape[0], height, width, self.channels[0])
        if spatial(cond):
            h = with_channels(h, cond)
        h = _up_stages(h, self.channels, act, self.residual, self.activation, self.dtype)
        if spatial(cond):
            h = with_channels(h, cond)
        return widen(nn.Conv(self.out_shape[2], (3, 3), dtype=self.dtype)(h), self.dtype)


class GridEncoder(ConvEncoder):
    """(B, H, W, C) in [0, 1] and optional condition -> a grid of code vectors (B, H / 2^S,
    W / 2^S, latent_dim), S = len(channels): :class:`ConvEncoder`'s stages, then a 1x1 conv (no
    dense bottleneck). A condition joins the input image as channels (:func:`with_condition_channels`)."""

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        h = with_condition_channels((2.0 * x - 1.0).astype(self.dtype), cond)
        h = _down_stages(h, self.channels, getattr(nn, self.activation), self.residual, self.activation, self.dtype)
        return widen(nn.Conv(self.latent_dim, (1, 1), dtype=self.dtype)(h), self.dtype)


class GridDecoder(ConvDecoder):
    """A grid of code vectors (B, h, w, D) and optional condition -> (B, *out_shape): a 3x3 conv
    to channels[0], then :class:`ConvDecoder`'s upsampling stages and output conv; a condition
    joins the code grid and, at full size, the last conv's input as channels
    (:func:`with_condition_channels`)."""

    @nn.compact
    def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = getattr(nn, self.activation)
        h = act(nn.Conv(self.channels[0], (3, 3), dtype=self.dtype)(with_condition_channels(z, cond)))
        h = _up_stages(h, self.channels, act, self.residual, self.activation, self.dtype)
        h = with_condition_channels(h, cond)
        return widen(nn.Conv(self.out_shape[2], (3, 3), dtype=self.dtype)(h), self.dtype)
