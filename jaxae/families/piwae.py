"""PIWAE (Rainforth et al. 2018), ``piwae``: the encoder trained on MIWAE(M, K), the decoder on
IWAE_(M K), both on the same M * K posterior samples per example.

One loss gives both gradients: with sg the stop-gradient, the log-weights are computed
twice from the same samples, once with the generative model's parameters stopped
(``w_enc``) and once with the inference network's stopped (``w_dec``), and

    loss = IWAE_loss(w_dec) + MIWAE_loss(w_enc) - sg(MIWAE_loss(w_enc)),

whose value is the IWAE_(M K) loss, whose gradient in q(z|x)'s parameters is MIWAE's and in
p(x|z)'s is IWAE_(M K)'s (``inference_mask`` says which is which). Logged besides:
``miwae``, the encoder's objective.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxae import objectives
from jaxae.families.base import Params
from jaxae.families.miwae import MIWAE


def _stop_where(params: Params, mask, stop: bool) -> Params:
    """``params`` with stop_gradient on the leaves whose mask equals ``stop``."""
    return jax.tree.map(lambda p, m: jax.lax.stop_gradient(p) if m == stop else p, params, mask)


@dataclasses.dataclass(frozen=True)
class PIWAE(MIWAE):
    name = "piwae"

    def bound_loss(self, params: Params, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        mask = self.inference_mask(params)
        encoder_loss = objectives.miwae_loss(
            self.importance_log_weights(_stop_where(params, mask, stop=False), batch, keys), self.miwae_m)
        decoder_loss = objectives.iwae_loss(self.importance_log_weights(_stop_where(params, mask, stop=True),
                                                                        batch, keys))
        loss = decoder_loss + encoder_loss - jax.lax.stop_gradient(encoder_loss)
        return loss, {"miwae": encoder_loss}
