"""Fully connected encoder and decoder.

``dtype`` is the compute dtype of every layer (inputs are cast to it; params stay
float32, ``param_dtype``); outputs are returned as float32 so the likelihood and KL
are computed in full precision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn



# MLP presets: the widths and nonlinearity they fix (they override --hidden_dims,
# --top_hidden_dims and --activation). Latent sizes stay --latent_dim / --top_latent_dim
# (Flax example: 20; Burda et al.: 50, or 100 and 50 with two stochastic layers).
PRESETS = {
    "mlp_flax": {"hidden_dims": (500,), "activation": "relu"},
    "mlp_burda": {"hidden_dims": (200, 200), "top_hidden_dims": (100, 100), "activation": "tanh"},
}


def widen(x: jax.Array, dtype: Any) -> jax.Array:
    """A network output back in float32 when the layers computed in a reduced dtype; with
    ``dtype`` None (the default: the params' precision, float32 or float64 in gradient
    checks) it is returned unchanged."""
    return x if dtype is None else x.astype(jnp.float32)

def with_condition(h: jax.Array, cond: jax.Array | None) -> jax.Array:
    """(B, D) features and an optional condition (B, ...) -> (B, D + K): the condition
    flattened to K numbers per example and appended."""
    return h if cond is None else jnp.concatenate([h, cond.reshape(cond.shape[0], -1).astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
    """(B, H, W, C) in [0, 1] and optional condition (B, ...) -> (mean, logvar), each (B, latent_dim).
    The condition (a one-hot label (B, K) or an image (B, h, w, C)) is flattened and appended
    to the input."""

    hidden_dims: Sequence[int]
    latent_dim: int
    activation: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        act = getattr(nn, self.activation)
        h = with_condition(x.reshape(x.shape[0], -1), cond)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, dtype=self.dtype)(h))
        stats = widen(nn.Dense(2 * self.latent_dim, dtype=self.dtype)(h), self.dtype)
        mean, logvar = jnp.split(stats, 2, axis=-1)
        return mean, logvar


class MLPDecoder(nn.Module):
    """(B, latent_dim) and optional condition (B, ...), flattened and appended to the latent ->
    (B, *out_shape) likelihood parameters."""

    hidden_dims: Sequence[int]
    out_shape: tuple[int, int, int]
    activation: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = getattr(nn, self.activation)
        h = with_condition(z, cond)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, dtype=self.dtype)(h))
        out = widen(nn.Dense(math.prod(self.out_shape), dtype=self.dtype)(h), self.dtype)
        return out.reshape(z.shape[0], *self.out_shape)
