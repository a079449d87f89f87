"""Model families. A family bundles its networks, its objective and how it draws latents;
training, checkpointing, evaluation and sampling are shared (see jaxae.training)."""

from __future__ import annotations

from jaxae.config import HVAE_PRESETS, Config, ConfigError
from jaxae.data import InputSpec
from jaxae.models.autoencoder import AutoencoderModel, AutoencoderNet, TwoLayerNet
from jaxae.models.hvae import HierarchicalNet, HVAEArch
from jaxae.nets import MLPEncoder
from jaxae.objectives import ObjectiveSettings


def make_model(config: Config, spec: InputSpec) -> AutoencoderModel:
    """Builds the model family named by ``config.model`` for inputs described by ``spec``."""
    from jaxae.likelihoods import make_likelihood
    from jaxae.nets import compute_dtype, make_encoder_decoder

    if config.model == "cvae" and spec.num_classes < 2:
        raise ConfigError(f"--model cvae needs a labelled dataset; {config.dataset!r} has no class labels")
    likelihood = make_likelihood(config)
    settings = ObjectiveSettings.from_config(config)
    if config.model == "hvae":
        arch = HVAEArch(**HVAE_PRESETS[config.arch])
        try:
            arch.check(spec.image_shape)
        except ValueError as e:
            raise ConfigError(f"--arch {config.arch}: {e}") from None
        net = HierarchicalNet(arch=arch, out_channels=likelihood.output_channels(spec.image_shape[2]))
        return AutoencoderModel(family="hvae", net=net, likelihood=likelihood, spec=spec, latent_dim=arch.top_dim,
                                settings=settings, noise_dim=arch.noise_dim)
    encoder, decoder = make_encoder_decoder(config, spec.image_shape, likelihood.output_channels(spec.image_shape[2]))
    if config.stochastic_layers == 1:
        return AutoencoderModel(family=config.model, net=AutoencoderNet(encoder=encoder, decoder=decoder),
                                likelihood=likelihood, spec=spec, latent_dim=config.latent_dim, settings=settings)
    top, bottom = config.top_latent_dim, config.latent_dim
    _, top_hidden, act = config.mlp_settings()
    dtype = compute_dtype(config)
    net = TwoLayerNet(x_encoder=encoder, x_decoder=decoder, bottom_dim=bottom,
                      z_encoder=MLPEncoder(top_hidden, top, act, dtype),
                      z_decoder=MLPEncoder(tuple(reversed(top_hidden)), bottom, act, dtype))
    return AutoencoderModel(family=config.model, net=net, likelihood=likelihood, spec=spec, latent_dim=top,
                            settings=settings, noise_dim=bottom + top)


__all__ = ["AutoencoderModel", "AutoencoderNet", "HVAEArch", "HierarchicalNet", "TwoLayerNet", "make_model"]
