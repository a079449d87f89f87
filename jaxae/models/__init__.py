"""Model families. A family bundles its networks, its objective and how it draws latents;
training, checkpointing, evaluation and sampling are shared (see jaxae.training)."""

from __future__ import annotations

from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.models.vae import VAE, VAENet, negative_elbo


def make_model(config: Config, spec: InputSpec) -> VAE:
    """Builds the model family named by ``config.model`` for inputs described by ``spec``."""
    from jaxae.likelihoods import make_likelihood
    from jaxae.nets import make_encoder_decoder

    likelihood = make_likelihood(config)
    encoder, decoder = make_encoder_decoder(config, spec.image_shape, likelihood.params_per_channel)
    return VAE(net=VAENet(encoder=encoder, decoder=decoder), likelihood=likelihood,
               spec=spec, latent_dim=config.latent_dim)


__all__ = ["VAE", "VAENet", "make_model", "negative_elbo"]
