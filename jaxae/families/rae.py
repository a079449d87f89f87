"""Regularized autoencoders (Ghosh et al. 2020, "From variational to deterministic
autoencoders"): ``rae_l2`` and ``rae_gp``, two registry names for the paper's RAE-L2 and
RAE-GP, which differ only in the decoder's regulariser.

A deterministic encoder, z = the encoder's mean, and

    loss = mean_b [-log p(x_b|z_b) + code_l2 ||z_b||^2] + decoder_reg * R,

the reconstruction term being the data likelihood's (the Gaussian likelihood gives the
paper's L2 loss up to scale and a constant), code_l2 = beta / 2 of the paper's
beta ||z||^2 / 2, and R:

- ``rae_l2``: the squared L2 norm of the decoder's parameters (weight decay on p(x|z)'s
  parameters, ``inference_mask`` False), the same for every example;
- ``rae_gp``: mean_b ||d mu(z_b) / d z_b||_F^2, the squared Frobenius norm of the
  Jacobian of the decoder's mean image at the code (exact, forward mode: latent_dim
  Jacobian-vector products per example).

No likelihood bound: evaluation reports ``recon`` and the per-image ``loss``. Samples
come from the density fitted to the training codes (jaxae.priors, ``prior.npz``), the
paper's ex-post density estimation, as for ``ae``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.config import Config
from jaxae.errors import ConfigError
from jaxae.families.ae import AE
from jaxae.families.base import Params


@dataclasses.dataclass(frozen=True)
class RAE(AE):
    """The shared RAE; a subclass defines ``decoder_penalty``."""

    decoder_reg: float = 0.0

    name = "rae"
    settings = ("code_l2", "decoder_reg")

    @classmethod
    def check(cls, config: Config) -> None:
        super().check(config)
        if not config.objective.decoder_reg > 0:
            raise ConfigError(f"--model {cls.name} needs --decoder_reg > 0 (its regulariser's weight); with 0 it "
                              "is --model ae")

    def decoder_penalty(self, params: Params, code: jax.Array) -> jax.Array:
        """The regulariser R per example (B,), before its weight; code (B, latent_dim)."""
        raise NotImplementedError(f"{type(self).__name__} must define decoder_penalty")

    def eval_terms(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        terms = self.forward(params, batch, keys)
        code = terms["code"]
        decoder = self.decoder_reg * self.decoder_penalty(params, code)
        penalty = self.code_l2 * jnp.sum(jnp.square(code), axis=-1) + decoder
        return {"loss": terms["recon"] + penalty, "recon": terms["recon"]}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        penalty = jnp.mean(self.decoder_penalty(params, terms["code"]))
        loss = objectives.autoencoder_loss(terms["recon"], terms["code"], self.code_l2) + self.decoder_reg * penalty
        return loss, {"loss": loss, "recon": jnp.mean(terms["recon"]), "decoder_penalty": penalty}


@dataclasses.dataclass(frozen=True)
class RAEL2(RAE):
    name = "rae_l2"

    def decoder_penalty(self, params: Params, code: jax.Array) -> jax.Array:
        """sum of the squares of the generative model's parameters, broadcast to (B,)."""
        decoder = jax.tree.leaves(jax.tree.map(lambda p, m: None if m else p, params, self.inference_mask(params)))
        return jnp.full(code.shape[:1], sum(jnp.sum(jnp.square(p)) for p in decoder))


@dataclasses.dataclass(frozen=True)
class RAEGP(RAE):
    name = "rae_gp"

    def decoder_penalty(self, params: Params, code: jax.Array) -> jax.Array:
        """||d mean_image / d z||_F^2 at each code, (B,)."""
        def mean_image(z):
            return self.decode(params, z[None])[0]

        jacobians = jax.vmap(jax.jacfwd(mean_image))(code)                          # (B, H, W, C, D)
        return jnp.sum(jnp.square(jacobians), axis=tuple(range(1, jacobians.ndim)))
