"""The two-stage VAE (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models"), ``two_stage``.

Stage 1 is the one-stochastic-layer VAE of the flat network (q(z|x) = N(mean, diag var),
p(z) = N(0, I)) with, for ``--likelihood gaussian`` (and no ``--gaussian_scale``), the
paper's learned decoder variance: one scalar log-scale log gamma^(1/2) for every pixel
(param ``decoder/log_scale``, initialised 0, i.e. gamma = 1, clipped to [-7, 2] by the
Gaussian likelihood), not jaxae's per-pixel scale. On binarized data (the default) stage 1
uses the Bernoulli likelihood: no gamma. Stage 2 is a second VAE on the stage-1 codes
z ~ q(z|x): an MLP encoder z -> q(u|z) = N(m(z), diag v(z)), u of the same size D as z,
p(u) = N(0, I), and an MLP decoder u -> p(z|u) = N(mu(u), gamma_2 I) with a learned scalar
gamma_2 (``stage2_log_gamma``), both MLPs with two hidden layers of ``stage2_hidden``
units and the network's activation.

Training, as in the paper, is sequential inside one run: the loss is stage 1's negative ELBO
for steps < ``stage1_steps`` (0: half of ``--steps``) and stage 2's negative ELBO on the codes
afterwards (the codes drawn with the frozen stage-1 encoder, stop_gradient); ``trainable``
freezes the other stage's parameters, so Adam's momentum does not move stage 1 in stage 2.
Samples: u ~ N(0, T^2 I) -> z = mu(u) (``prior_draws``, the stage-2 decoder's mean) ->
stage-1 decoder (``decode``, which also reconstructs codes).

Conditioned (``--conditional`` or ``--condition lowres``), stage 1 is the conditional VAE
(encoder and decoder see c, p(z) = N(0, I)) and stage 2 models the codes of all images
whatever their condition (the stage-1 prior does not depend on c either); samples decode
stage 2's codes under the condition given.

Evaluation: ``nelbo`` and the IWAE bound are stage 1's with its N(0, I) prior, as the
paper reports; ``nelbo_two_stage`` is a bound on log p(x) of the two-stage model,
-log p(x|z) + log q(z|x) - ELBO_2(z) at one z ~ q(z|x) (ELBO_2(z) <= log p_2(z)).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import inputs
from jaxae import distributions as dist
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families.base import LatentModel, Params, by_module, flat_net
from jaxae.likelihoods import Gaussian, Likelihood
from jaxae.nets import MLPEncoder, OneLayerNet

STAGE2_FOLD = 6  # The stage-2 noise: fold 6 of each example key (jaxae.inputs uses 0..5).


class ScalarScaleDecoder(nn.Module):
    """A decoder emitting C means per pixel followed by one learned scalar log-scale
    (``log_scale``) for all of them: (B, H, W, C) -> (B, H, W, 2 C), the layout of the
    Gaussian likelihood with a learned scale."""

    decoder: nn.Module

    @nn.compact
    def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        mean = self.decoder(z, cond)
        log_scale = self.param("log_scale", nn.initializers.zeros, ())
        return jnp.concatenate([mean, jnp.broadcast_to(log_scale, mean.shape)], axis=-1)


class TwoStageNet(OneLayerNet):
    """Stage 1 (``OneLayerNet``'s methods) and stage 2 (``stage2_*``), of latent size ``latent_dim``."""

    latent_dim: int
    hidden: int
    activation: str

    def setup(self):
        widths = (self.hidden, self.hidden)
        self.stage2_encoder = MLPEncoder(widths, self.latent_dim, self.activation)
        self.stage2_decoder = MLPEncoder(widths, self.latent_dim, self.activation)  # Its mean is mu(u).
        self.stage2_log_gamma = self.param("stage2_log_gamma", nn.initializers.zeros, ())

    def stage2_terms(self, z: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Stage 2's -log p(z|u) (B,) at u = m + sqrt(v) * eps and KL(q(u|z) || N(0, I)) per unit (B, D)."""
        m, logvar = self.stage2_encoder(z)
        mu = self.stage2_decoder(m + jnp.exp(0.5 * logvar) * eps)[0]
        return -dist.diag_gaussian_log_prob(z, mu, jnp.broadcast_to(self.stage2_log_gamma, z.shape)), \
            dist.gaussian_kl(m, logvar)

    def init_both(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        """Touches both stages (for init)."""
        return self(x, eps, cond), self.stage2_terms(eps, eps)

    def draw(self, rng: jax.Array, num_samples: int, scale: float | jax.Array = 1.0) -> jax.Array:
        """Codes (num_samples, D): mu(u), u = scale * N(0, I) from rng."""
        return self.stage2_decoder(scale * jax.random.normal(rng, (num_samples, self.latent_dim)))[0]


@dataclasses.dataclass(frozen=True)
class TwoStage(LatentModel):
    stage1_steps: int = 0
    stage2_hidden: int = 256

    name = "two_stage"
    settings = ("stage1_steps", "stage2_hidden")
    two_layers = False

    @classmethod
    def options(cls, config: Config) -> dict[str, Any]:
        """``stage1_steps`` resolved: half of ``--steps`` when 0 (refused with ``--epochs``)."""
        o, r = config.objective, config.run
        if not o.stage1_steps and r.epochs is not None:
            raise ConfigError("--model two_stage with --epochs needs --stage1_steps (the steps of stage 1)")
        if r.epochs is None and o.stage1_steps >= r.steps:
            raise ConfigError(f"--stage1_steps {o.stage1_steps} leaves no step of --steps {r.steps} to stage 2")
        return {"stage1_steps": o.stage1_steps or r.steps // 2, "stage2_hidden": o.stage2_hidden}

    @classmethod
    def network(cls, config: Config, spec: InputSpec, likelihood: Likelihood) -> tuple[nn.Module, int, int]:
        scalar_scale = isinstance(likelihood, Gaussian) and likelihood.scale is None
        # With the scalar scale the decoder emits the means only (a fixed scale's layout).
        flat, latent_dim, _ = flat_net(config, spec, Gaussian(1.0) if scalar_scale else likelihood)
        decoder = ScalarScaleDecoder(flat.decoder) if scalar_scale else flat.decoder
        net = TwoStageNet(encoder=flat.encoder, decoder=decoder, latent_dim=latent_dim,
                          hidden=config.objective.stage2_hidden, activation=config.model.mlp_settings()[2])
        return net, latent_dim, latent_dim

    def init(self, rng: jax.Array) -> Params:
        x = jnp.zeros((1, *self.spec.image_shape), jnp.float32)
        cond = self.condition(self.conditioning.placeholder(1))
        return self.net.init(rng, x, jnp.zeros((1, self.latent_dim)), cond, method=TwoStageNet.init_both)["params"]

    def stage2(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Stage 2 on z ~ q(z|x) (stop_gradient): its ``recon`` -log p(z|u) and ``kl`` (B,), and
        ``log_q`` = log q(z|x) (B,) at that z (from the stage-1 noise of the keys)."""
        mean, logvar = self.encode_batch(params, batch)
        eps = self.noise(keys)
        z = jax.lax.stop_gradient(mean + jnp.exp(0.5 * logvar) * eps)
        recon, kl = self.net.apply({"params": params}, z, self.noise(inputs.fold(keys, STAGE2_FOLD)),
                                   method=TwoStageNet.stage2_terms)
        log_q = dist.diag_gaussian_log_prob(z, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(logvar))
        return {"recon": recon, "kl": jnp.sum(kl, axis=-1), "log_q": log_q}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        terms = self.eval_terms(params, batch, keys)
        in_stage2 = jnp.asarray(step) >= self.stage1_steps
        loss = jnp.where(in_stage2, jnp.mean(terms["stage2_nelbo"]), jnp.mean(terms["nelbo"]))
        scalars = {name: jnp.mean(terms[name]) for name in ("nelbo", "recon", "kl", "stage2_nelbo", "nelbo_two_stage")}
        return loss, dict(scalars, stage=1.0 + in_stage2, loss=loss)

    def eval_terms(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Stage 1's terms (``LatentModel.eval_terms``), stage 2's negative ELBO ``stage2_nelbo``
        at the stage-1 code z, and ``nelbo_two_stage`` = -log p(x|z) + log q(z|x) - ELBO_2(z)
        at the same z, each (B,) nats."""
        terms = super().eval_terms(params, batch, keys)
        two = self.stage2(params, batch, keys)
        nelbo2 = two["recon"] + two["kl"]
        return dict(terms, stage2_nelbo=nelbo2, nelbo_two_stage=terms["recon"] + two["log_q"] + nelbo2)

    def trainable(self, params: Params, step: jax.Array) -> Any:
        """Stage 1's parameters before ``stage1_steps``, stage 2's (``stage2_*``) from then on."""
        in_stage2 = jnp.asarray(step) >= self.stage1_steps
        return by_module(params, lambda name: in_stage2 == name.startswith("stage2"))

    def prior_draws(self, params: Params, rng: jax.Array, num_samples: int,
                    scale: float | jax.Array = 1.0) -> jax.Array:
        """Stage-1 codes (num_samples, D) from stage 2: mu(u), u ~ N(0, scale^2 I) (``TwoStageNet.draw``)."""
        return self.net.apply({"params": params}, rng, num_samples, scale, method=TwoStageNet.draw)
