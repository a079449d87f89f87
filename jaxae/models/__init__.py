"""Model families. A family bundles its networks, its objective and how it draws latents;
training, checkpointing, evaluation and sampling are shared (see jaxae.training)."""

from __future__ import annotations

from jaxae.config import Config, ConfigError
from jaxae.data import InputSpec
from jaxae.models.autoencoder import AutoencoderModel, AutoencoderNet
from jaxae.objectives import ObjectiveSettings


def make_model(config: Config, spec: InputSpec) -> AutoencoderModel:
    """Builds the model family named by ``config.model`` for inputs described by ``spec``."""
    from jaxae.likelihoods import make_likelihood
    from jaxae.nets import make_encoder_decoder

    if config.model == "cvae" and spec.num_classes < 2:
        raise ConfigError(f"--model cvae needs a labelled dataset; {config.dataset!r} has no class labels")
    likelihood = make_likelihood(config)
    encoder, decoder = make_encoder_decoder(config, spec.image_shape, likelihood.params_per_channel)
    return AutoencoderModel(
        family=config.model, net=AutoencoderNet(encoder=encoder, decoder=decoder), likelihood=likelihood,
        spec=spec, latent_dim=config.latent_dim, settings=ObjectiveSettings.from_config(config))


__all__ = ["AutoencoderModel", "AutoencoderNet", "make_model"]
