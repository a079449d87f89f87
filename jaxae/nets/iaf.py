"""Inverse autoregressive flow (Kingma et al. 2016, "Improved Variational Inference with
Inverse Autoregressive Flow"): MADE-style masked networks and the flow they make.

One IAF step maps z (..., D) and a context h (..., C) to

    [m, s] = MADE(z, h),   sigma = sigmoid(s + FORGET_BIAS),   z' = sigma * z + (1 - sigma) * m,

the numerically stable "LSTM-type" update of the paper (its eq. 14 and Algorithm 1). m_d
and s_d depend on z_1 .. z_{d-1} only (the masks below), so dz'/dz is lower triangular
with diagonal sigma and log|det dz'/dz| = sum_d log sigma_d. The variable order is
reversed before every step but the first (the paper's "reversed ordering" between steps),
which leaves |det| unchanged.

MADE (Germain et al. 2015): input unit d (1-based) has degree d; hidden unit k of a layer
of width W has degree 1 + (k mod max(D - 1, 1)); a hidden unit sees the units of the
layer below with degree <= its own, an output for dimension d the last hidden units of
degree < d. The context enters the first hidden layer through an unmasked dense layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# Added to s so that sigma = sigmoid(s + 1) starts near 0.73 and each step starts close to
# the identity (the paper initialises the gate's bias positive for this reason).
FORGET_BIAS = 1.0


def made_masks(dim: int, widths: Sequence[int]) -> list[np.ndarray]:
    """The 0/1 masks (fan_in, fan_out) of a MADE with hidden ``widths`` on ``dim`` inputs;
    the last one (widths[-1], dim) is for one output per dimension (tile it for more)."""
    degrees = [np.arange(1, dim + 1)]
    for width in widths:
        degrees.append(1 + np.arange(width) % max(dim - 1, 1))
    masks = [(later[None, :] >= earlier[:, None]).astype(np.float32)
             for earlier, later in zip(degrees[:-1], degrees[1:])]
    masks.append((degrees[0][None, :] > degrees[-1][:, None]).astype(np.float32))
    return masks


class MaskedDense(nn.Module):
    """x @ (kernel * mask) + bias: x (..., fan_in), mask (fan_in, features) -> (..., features)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ (kernel * mask) + bias


class MADE(nn.Module):
    """(z (..., D), context h (..., C)) -> (m, s), each (..., D), m_d and s_d functions of
    z_<d and h only; ELU hidden layers of ``widths``."""

    dim: int
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        masks = made_masks(self.dim, self.widths)
        x = z
        for i, (width, mask) in enumerate(zip(self.widths, masks)):
            x = MaskedDense(width)(x, mask)
            if i == 0:
                x = x + nn.Dense(width, use_bias=False)(h)
            x = nn.elu(x)
        out = MaskedDense(2 * self.dim)(x, np.tile(masks[-1], (1, 2)))
        return out[..., :self.dim], out[..., self.dim:]


class IAF(nn.Module):
    """``steps`` IAF steps, each its own MADE of hidden ``widths``: (z0 (..., D), h (..., C))
    -> (z_T (..., D), sum over steps and dimensions of log sigma (...)), so that
    log q(z_T) = log q(z0) - the second output."""

    dim: int
    steps: int
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        log_det = jnp.zeros(z.shape[:-1], z.dtype)
        for t in range(self.steps):
            if t:
                z = z[..., ::-1]
            m, s = MADE(self.dim, self.widths, name=f"step_{t}")(z, h)
            gate = s + FORGET_BIAS
            z = jax.nn.sigmoid(gate) * z + jax.nn.sigmoid(-gate) * m
            log_det = log_det + jnp.sum(jax.nn.log_sigmoid(gate), axis=-1)
        return z, log_det
