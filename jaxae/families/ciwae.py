"""CIWAE (Rainforth et al. 2018), ``ciwae``: a convex combination of the ELBO and the IWAE bound.

loss = -(beta ELBO_K + (1 - beta) IWAE_K) with both bounds estimated from the same K =
``num_importance_samples`` posterior samples (ELBO_K: the mean of their log-weights),
beta = ``ciwae_beta`` in [0, 1]: 1 is the VAE (sampled KL), 0 the IWAE. Logged besides:
``elbo_k`` and ``iwae_k``, the two bounds (nats, negated as losses).
"""

from __future__ import annotations

import dataclasses

import jax

from jaxae import objectives
from jaxae.families.base import Params
from jaxae.families.iwae import IWAE


@dataclasses.dataclass(frozen=True)
class CIWAE(IWAE):
    ciwae_beta: float = 0.5

    name = "ciwae"
    settings = ("num_importance_samples", "ciwae_beta")

    def bound_loss(self, params: Params, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        log_w = self.importance_log_weights(params, batch, keys)
        scalars = {"elbo_k": objectives.ciwae_loss(log_w, 1.0), "iwae_k": objectives.iwae_loss(log_w)}
        return objectives.ciwae_loss(log_w, self.ciwae_beta), scalars
