"""The autoencoder model families: one network design, one set of pure functions, and a
family-specific objective.

Families (``Config.model``):

- ``vae``  (Kingma & Welling 2014): q(z|x) = N(mean, diag var), p(z) = N(0, I);
  loss = -ELBO = -E_q[log p(x|z)] + KL(q || p), one reparameterised sample, KL in closed
  form. Optional KL warm-up and free bits.
- ``beta_vae`` (Higgins et al. 2017): the same with the KL weighted by ``beta``.
- ``iwae`` (Burda et al. 2015): loss = -log (1/K) sum_k p(x, z_k) / q(z_k|x), K =
  ``num_importance_samples`` (K = 1 is the VAE's objective with a sampled KL).
- ``cvae`` (Sohn et al. 2015): encoder and decoder also see the one-hot class label;
  p(z) = N(0, I); samples are drawn for a chosen class.
- ``ae``: deterministic code z = encoder mean; loss = -log p(x|z) + code_l2 ||z||^2.
  Sampling uses a density fitted to the training codes (jaxae.priors).

Any family can be trained as a denoiser: ``input_noise`` corrupts the encoder's input
only, the likelihood scores the clean image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae import objectives
from jaxae.data import InputSpec, corrupt, to_model_input
from jaxae.likelihoods import Likelihood

Params = Any


class AutoencoderNet(nn.Module):
    """Encoder + decoder, each optionally conditioned on a vector (the one-hot label).

    ``__call__(x, eps, cond)`` -> (decoder output, posterior mean, logvar), where
    z = mean + exp(logvar / 2) * eps; pass eps = 0 for the deterministic code.
    """

    encoder: nn.Module
    decoder: nn.Module

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decoder(z, cond), mean, logvar

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x, cond)

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        return self.decoder(z, cond)


def _fold(keys: jax.Array, i: int) -> jax.Array:
    return jax.vmap(jax.random.fold_in, (0, None))(keys, i)


@dataclasses.dataclass(frozen=True)
class AutoencoderModel:
    """A model family as pure functions of (params, batch, keys). Hashable: jit-static.

    batch: {"image": uint8 (B, H, W, C), "label": int32 (B,) (needed by ``cvae``)};
    keys: one PRNG key per example (B,). Each example's key is split: fold 0 turns the
    image into model input (binarization / dequantization), fold 1 draws z, fold 2 the
    denoising corruption.
    """

    family: str
    net: AutoencoderNet
    likelihood: Likelihood
    spec: InputSpec
    latent_dim: int
    settings: objectives.ObjectiveSettings

    @property
    def deterministic(self) -> bool:
        """True for ``ae``: no posterior noise, no likelihood bound."""
        return self.family == "ae"

    @property
    def conditional(self) -> bool:
        return self.family == "cvae"

    def condition(self, labels: jax.Array | None) -> jax.Array | None:
        """One-hot (B, num_classes) for ``cvae``, else None."""
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError("cvae needs the batch's labels")
        return jax.nn.one_hot(labels, self.spec.num_classes)

    def init(self, rng: jax.Array) -> Params:
        x = jnp.zeros((1, *self.spec.image_shape), jnp.float32)
        cond = jnp.zeros((1, self.spec.num_classes)) if self.conditional else None
        return self.net.init(rng, x, jnp.zeros((1, self.latent_dim)), cond)["params"]

    def model_input(self, images: jax.Array, keys: jax.Array) -> jax.Array:
        """uint8 images -> the float input the likelihood scores (per-example key fold 0)."""
        return to_model_input(images, _fold(keys, 0), self.spec)

    def _terms(self, params: Params, batch: dict, keys: jax.Array, noisy: bool) -> dict[str, jax.Array]:
        x = self.model_input(batch["image"], keys)
        x_in = corrupt(x, _fold(keys, 2), self.settings.input_noise, self.settings.noise_level) if noisy else x
        cond = self.condition(batch.get("label"))
        eps_keys = _fold(keys, 1)
        eps = (jnp.zeros((x.shape[0], self.latent_dim)) if self.deterministic else
               jax.vmap(lambda k: jax.random.normal(k, (self.latent_dim,)))(eps_keys))
        out, mean, logvar = self.net.apply({"params": params}, x_in, eps, cond)
        recon = -self.likelihood.log_prob(out, x)
        if self.deterministic:
            return {"loss": recon + self.settings.code_l2 * jnp.sum(jnp.square(mean), axis=-1), "recon": recon,
                    "code": mean}
        kl_per_dim = 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)
        kl = jnp.sum(kl_per_dim, axis=-1)
        return {"nelbo": recon + kl, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim,
                "x": x, "x_in": x_in, "cond": cond}

    def per_example(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Evaluation terms on clean inputs, each (B,) in nats: ``nelbo``, ``recon``, ``kl``
        (``loss`` and ``recon`` for ``ae``)."""
        terms = self._terms(params, batch, keys, noisy=False)
        names = ("loss", "recon") if self.deterministic else ("nelbo", "recon", "kl")
        return {name: terms[name] for name in names}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The family's training objective (scalar, nats per image) and batch-mean metrics."""
        terms = self._terms(params, batch, keys, noisy=True)
        settings = self.settings
        if self.deterministic:
            loss = objectives.autoencoder_loss(terms["recon"], terms["code"], settings.code_l2)
            return loss, {"loss": loss, "recon": jnp.mean(terms["recon"])}
        metrics = {"nelbo": jnp.mean(terms["nelbo"]), "recon": jnp.mean(terms["recon"]),
                   "kl": jnp.mean(terms["kl"])}
        if self.family == "iwae":
            log_w = self.log_importance_weights(params, terms["x"], _fold(keys, 1), settings.num_importance_samples,
                                                cond=terms["cond"], x_in=terms["x_in"])
            loss = objectives.iwae_loss(log_w)
        else:
            weight = objectives.kl_weight(step, settings.beta, settings.kl_warmup_steps)
            loss = objectives.elbo_loss(terms["recon"], terms["kl_per_dim"], weight, settings.free_bits)
            metrics["kl_weight"] = weight
        return loss, dict(metrics, loss=loss)

    def log_importance_weights(self, params: Params, x: jax.Array, keys: jax.Array, num_samples: int,
                               start: jax.Array | int = 0, cond: jax.Array | None = None,
                               x_in: jax.Array | None = None) -> jax.Array:
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for z_s ~ q(z|x), s = start .. start+num_samples-1.

        x: float model input (B, H, W, C) that the likelihood scores; x_in: the encoder's
        input (default x; a corrupted x for denoising); keys: (B,) -> (B, num_samples)
        nats. Sample s of an example uses the key fold_in(key, s), so drawing k samples in
        chunks gives the same samples whatever the chunk size. log mean_s exp(log w_s)
        is the IWAE bound on log p(x) (Burda et al. 2015).
        """
        x_in = x if x_in is None else x_in
        mean, logvar = self.net.apply({"params": params}, x_in, cond, method=AutoencoderNet.encode)
        index = start + jnp.arange(num_samples)
        draw = lambda key: jax.random.normal(jax.random.fold_in(key, 0), (self.latent_dim,))  # noqa: E731
        eps = jax.vmap(lambda k: jax.vmap(lambda i: draw(jax.random.fold_in(k, i)))(index))(keys)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps                    # (B, S, D)
        flat_cond = None if cond is None else jnp.repeat(cond, num_samples, axis=0)
        out = self.net.apply({"params": params}, z.reshape(-1, self.latent_dim), flat_cond,
                             method=AutoencoderNet.decode)
        out = out.reshape(*z.shape[:2], *out.shape[1:])                              # (B, S, H, W, C*k)
        log_px_z = self.likelihood.log_prob(out, x[:, None])
        log_pz = dist.standard_normal_log_prob(z)
        log_qz = dist.diag_gaussian_log_prob(z, mean[:, None], logvar[:, None])
        return log_px_z + log_pz - log_qz

    def posterior(self, params: Params, x: jax.Array, labels: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
        """Float model input (B, H, W, C) -> q(z|x) mean and logvar, each (B, latent_dim)."""
        return self.net.apply({"params": params}, x, self.condition(labels), method=AutoencoderNet.encode)

    def decode_mean(self, params: Params, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Latents (B, latent_dim) -> mean images (B, H, W, C) in [0, 1]."""
        out = self.net.apply({"params": params}, z, self.condition(labels), method=AutoencoderNet.decode)
        return self.likelihood.mean(out)

    def scaled_input(self, images: jax.Array) -> jax.Array:
        """uint8 images -> [0, 1] floats without randomness (grey levels for 8-bit data)."""
        return images.astype(jnp.float32) / (1.0 if self.spec.mode == "binary" else 255.0)

    def encode(self, params: Params, images: jax.Array, labels: jax.Array | None = None):
        """uint8 images -> posterior (mean, logvar), each (B, latent_dim), from the pixel
        intensities (no random binarization)."""
        return self.posterior(params, self.scaled_input(images), labels)

    def reconstruct(self, params: Params, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """uint8 images -> mean reconstructions in [0, 1] decoded from the posterior mean."""
        return self.decode_mean(params, self.encode(params, images, labels)[0], labels)
