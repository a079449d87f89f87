"""beta-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in variational
autoencoders"), ``btcvae``.

The ELBO's KL term, averaged over the data, splits into the index-code mutual information
I_q(z; n), the total correlation TC(z) = KL(q(z) || prod_d q(z_d)) and the dimension-wise KL
sum_d KL(q(z_d) || p(z_d)); beta-TCVAE weights them alpha, beta, gamma:

    loss = mean_i [-log p(x_i|z_i) + alpha mi_i + beta tc_i + gamma dwkl_i],  z_i ~ q(z|x_i),

with alpha = gamma = 1 (the paper's setting) and beta = ``--tc_weight`` (default 6; 1 is the
VAE's loss on the same sample). The terms (``objectives.tc_decomposition``) need q(z), which
is estimated on the batch by minibatch-weighted sampling (MWS, the paper's main text) or,
with ``--tc_estimator mss``, minibatch-stratified sampling (its appendix), with the training
split's size N, taken from the
input spec (``InputSpec.num_train``; when that is unknown, 0, the batch is taken as the data
set, N = B). ``--tc_weight`` is not ``--beta``: beta-VAE's beta weights the whole KL, this
one only the total correlation. q(z|x) is the VAE's, so evaluation reports its NELBO and
IWAE bound; one stochastic layer. Logged: ``mi``, ``tc``, ``dwkl`` (nats, batch means), with
MWS's constant offsets (+log N, +(D - 1) log N, -D log N; MSS has none; see
``objectives.tc_decomposition``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import objectives
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families.base import LatentModel, Params


@dataclasses.dataclass(frozen=True)
class BetaTCVAE(LatentModel):
    tc_weight: float = 6.0
    tc_estimator: str = "mws"
    dataset_size: int = 0  # N of the estimator: InputSpec.num_train (0: the batch size).

    name = "btcvae"
    settings = ("tc_weight", "tc_estimator")
    two_layers = False

    @classmethod
    def build(cls, config: Config, spec: InputSpec) -> "BetaTCVAE":
        return dataclasses.replace(super().build(config, spec), dataset_size=spec.num_train)

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.forward(params, batch, keys)
        recon, kl = terms["recon"], jnp.sum(terms["kl_per_unit"], axis=-1)
        z, mean, logvar = self.posterior_sample(params, batch, keys)
        parts = objectives.tc_decomposition(z, mean, logvar, self.dataset_size or z.shape[0], self.tc_estimator)
        loss = jnp.mean(recon + parts["mi"] + self.tc_weight * parts["tc"] + parts["dwkl"])
        return loss, {"nelbo": jnp.mean(recon + kl), "recon": jnp.mean(recon), "kl": jnp.mean(kl),
                      **{name: jnp.mean(value) for name, value in parts.items()}, "loss": loss}
