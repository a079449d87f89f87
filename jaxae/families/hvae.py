"""The hierarchical VAE, ``hvae`` (VDVAE, Child 2021; NVAE, Vahdat & Kautz 2020), on the
network of jaxae.nets.hierarchical.

loss = -log p(x|z) + weight * sum_l KL(q(z_l|x, z_<l) || p(z_l|z_<l)), every KL in closed
form per latent group; ``beta``, ``kl_warmup_steps`` and ``free_bits`` (nats per latent
group) act as in the VAE. Each group's KL is logged as ``kl_group<l>`` (coarsest first).

``--group_iaf_steps T`` (T > 0) puts an inverse autoregressive flow of T steps in every
group's posterior (Kingma et al. 2016; MADEs of two ``--iaf_hidden`` layers over each
position's channels): the per-group KLs are then one-sample estimates, the IWAE bound's
log-ratios stay exact (jaxae.nets.hierarchical).

``--dtype bfloat16`` computes the network in bfloat16 with float32 params, and the
KLs, the likelihood and the loss in float32; ``--remat`` recomputes activations in the
backward pass (jaxae.nets.hierarchical).

``--conditional`` / ``--condition lowres`` condition the top-down path on the label or x_low
(jaxae.nets.hierarchical); the top group's prior stays N(0, I).

Prior draws are the noise of every group (ancestral sampling, ``prior_dim`` =
``noise_dim``), so temperatures may be given per group; the code that ``encode``
returns, interpolates and traverses is the top group's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxae import nets
from jaxae.config import HVAE_PRESETS, Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families.base import LatentModel, conditioning_of, likelihood_of
from jaxae.families.vae import VAE
from jaxae.nets.hierarchical import HierarchicalNet, HVAEArch, group_temperatures


@dataclasses.dataclass(frozen=True)
class HVAE(VAE):
    group_iaf_steps: int = 0
    iaf_hidden: int = 128

    name = "hvae"
    settings = (*VAE.settings, "group_iaf_steps", "iaf_hidden")

    @classmethod
    def check(cls, config: Config) -> None:
        m = config.model
        if m.arch not in HVAE_PRESETS:
            raise ConfigError(f"--model hvae needs an --arch of {', '.join(HVAE_PRESETS)}; got --arch {m.arch}")
        if m.stochastic_layers != 1:
            raise ConfigError("--model hvae sets its own hierarchy; leave --stochastic_layers at 1")

    @classmethod
    def build(cls, config: Config, spec: InputSpec) -> "HVAE":
        arch = HVAEArch(**HVAE_PRESETS[config.model.arch])
        try:
            arch.check(spec.image_shape)
        except ValueError as e:
            raise ConfigError(f"--arch {config.model.arch}: {e}") from None
        likelihood, conditioning = likelihood_of(config), conditioning_of(config, spec)
        net = HierarchicalNet(arch=arch, out_channels=likelihood.output_channels(spec.image_shape[2]),
                              dtype=nets.compute_dtype(config.run.dtype), remat=config.run.remat,
                              flow_steps=config.objective.group_iaf_steps, flow_hidden=config.objective.iaf_hidden,
                              conditioned=conditioning.active)
        return cls(net=net, likelihood=likelihood, spec=spec, latent_dim=arch.top_dim, noise_dim=arch.noise_dim,
                   conditioning=conditioning, convolutional=True, **cls.options(config))

    @property
    def prior_dim(self) -> int:
        return self.noise_dim

    def kl_scalars(self, kl_per_unit: jax.Array) -> dict[str, jax.Array]:
        """The KL of each latent group (the units here), coarsest first: ``kl_group<l>``."""
        return {f"kl_group{g}": v for g, v in enumerate(jnp.mean(kl_per_unit, axis=0))}

    def noise_scale(self, temperatures: list[float]) -> float | jax.Array:
        """One temperature for every group, or one per group (coarsest first) -> (noise_dim,) scales."""
        if len(temperatures) == 1:
            return temperatures[0]
        try:
            return group_temperatures(self.net.arch, temperatures)
        except ValueError as e:
            raise ConfigError(f"--temperature: {e}") from None


__all__ = ["HVAE", "LatentModel"]
