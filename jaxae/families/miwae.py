"""MIWAE (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better"), ``miwae``.

loss = -(1/M) sum_m log (1/K) sum_k w_mk: the mean of M independent K-sample IWAE bounds,
M = ``miwae_m``, K = ``num_importance_samples``, on M * K posterior samples per example.
M = 1 is the IWAE, K = 1 the VAE's ELBO with a sampled KL averaged over M samples. The
networks, the log-weights and the logged closed-form ``nelbo`` are the IWAE's.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxae import objectives
from jaxae.families.base import Params
from jaxae.families.iwae import IWAE


@dataclasses.dataclass(frozen=True)
class MIWAE(IWAE):
    miwae_m: int = 1

    name = "miwae"
    settings = ("num_importance_samples", "miwae_m")

    @property
    def samples_per_example(self) -> int:
        """M * K; sample s = m * K + k belongs to bound m."""
        return self.miwae_m * self.num_importance_samples

    def bound_loss(self, params: Params, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        return objectives.miwae_loss(self.importance_log_weights(params, batch, keys), self.miwae_m), {}
