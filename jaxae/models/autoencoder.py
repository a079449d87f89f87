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
- ``hvae``: the hierarchical network of jaxae.models.hvae with the ELBO (closed-form KL
  per latent group; ``beta``, warm-up and free bits act per group).

Any family can be trained as a denoiser: ``input_noise`` corrupts the encoder's input
only, the likelihood scores the clean image. ``hflip`` augments training with random
left-right flips of the image itself (input and target alike).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae import objectives
from jaxae.data import InputSpec, corrupt, random_hflip, to_model_input
from jaxae.likelihoods import Likelihood

Params = Any


def _kl_per_dim(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per dimension, closed form."""
    return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def _flat(cond: jax.Array | None, repeats: int) -> jax.Array | None:
    return None if cond is None else jnp.repeat(cond, repeats, axis=0)


class AutoencoderNet(nn.Module):
    """One stochastic layer: encoder q(z|x) and decoder p(x|z), optionally conditioned on a
    vector (the one-hot label). Every network of jaxae has these four methods:

    - ``__call__(x, eps, cond)`` -> (decoder output, KL per dim (B, noise_dim), code):
      the training pass with z = mean + exp(logvar / 2) * eps (eps = 0: the deterministic
      code); the KL is in closed form.
    - ``sample_and_score(x, eps, cond)`` with eps (B, S, noise_dim) -> (decoder outputs
      (B, S, ...), log p(z) - log q(z|x) (B, S)): the importance-sampling pass.
    - ``encode(x, cond)`` -> (mean, logvar) of the top-level code; ``decode(z, cond)``.
    """

    encoder: nn.Module
    decoder: nn.Module

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decoder(z, cond), _kl_per_dim(mean, logvar), mean

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        mean, logvar = self.encoder(x, cond)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps                    # (B, S, D)
        out = self.decoder(z.reshape(-1, z.shape[-1]), _flat(cond, z.shape[1]))
        log_ratio = dist.standard_normal_log_prob(z) - dist.diag_gaussian_log_prob(z, mean[:, None], logvar[:, None])
        return out.reshape(*z.shape[:2], *out.shape[1:]), log_ratio

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x, cond)

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        return self.decoder(z, cond)


class TwoLayerNet(nn.Module):
    """Two stochastic layers (Burda et al. 2015): q(z1|x) q(z2|z1) and p(z2) p(z1|z2) p(x|z1),
    all diagonal Gaussians but the likelihood. Same four methods as AutoencoderNet; the
    noise is eps = [eps1, eps2] (noise_dim = D1 + D2) and the code is z2's.

    x_encoder: x -> q(z1|x); z_encoder: z1 -> q(z2|z1); z_decoder: z2 -> p(z1|z2);
    x_decoder: z1 -> p(x|z1).
    """

    x_encoder: nn.Module
    z_encoder: nn.Module
    z_decoder: nn.Module
    x_decoder: nn.Module
    bottom_dim: int

    def _sample(self, x, eps, cond):
        """eps (B, S, D1 + D2) -> z1, z2 and every layer's (mean, logvar)."""
        m1, lv1 = self.x_encoder(x, cond)
        z1 = m1[:, None] + jnp.exp(0.5 * lv1)[:, None] * eps[..., :self.bottom_dim]   # (B, S, D1)
        flat_cond = _flat(cond, eps.shape[1])
        m2, lv2 = self.z_encoder(z1.reshape(-1, self.bottom_dim), flat_cond)
        z2 = m2 + jnp.exp(0.5 * lv2) * eps[..., self.bottom_dim:].reshape(m2.shape)    # (B*S, D2)
        pm1, plv1 = self.z_decoder(z2, flat_cond)
        out = self.x_decoder(z1.reshape(-1, self.bottom_dim), flat_cond)
        return z1, z2, (m1, lv1), (m2, lv2), (pm1, plv1), out

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        z1, _, (m1, lv1), (m2, lv2), (pm1, plv1), out = self._sample(x, eps[:, None], cond)
        z1 = z1[:, 0]
        # log q(z1|x) - log p(z1|z2) per dim (one sample), plus KL(q(z2|z1) || N(0, I)) in closed form.
        kl1 = 0.5 * (plv1 + jnp.square(z1 - pm1) * jnp.exp(-plv1) - lv1 - jnp.square(eps[:, :self.bottom_dim]))
        return out, jnp.concatenate([kl1, _kl_per_dim(m2, lv2)], axis=-1), m2

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        batch, samples = eps.shape[:2]
        z1, z2, (m1, lv1), (m2, lv2), (pm1, plv1), out = self._sample(x, eps, cond)
        z1_flat = z1.reshape(-1, self.bottom_dim)
        log_ratio = (dist.standard_normal_log_prob(z2) + dist.diag_gaussian_log_prob(z1_flat, pm1, plv1)
                     - dist.diag_gaussian_log_prob(z2, m2, lv2)).reshape(batch, samples)
        log_ratio = log_ratio - dist.diag_gaussian_log_prob(z1, m1[:, None], lv1[:, None])
        return out.reshape(batch, samples, *out.shape[1:]), log_ratio

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        m1, _ = self.x_encoder(x, cond)
        return self.z_encoder(m1, cond)

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        pm1, _ = self.z_decoder(z, cond)
        return self.x_decoder(pm1, cond)


def _fold(keys: jax.Array, i: int) -> jax.Array:
    return jax.vmap(jax.random.fold_in, (0, None))(keys, i)


@dataclasses.dataclass(frozen=True)
class AutoencoderModel:
    """A model family as pure functions of (params, batch, keys). Hashable: jit-static.

    batch: {"image": uint8 (B, H, W, C), "label": int32 (B,) (needed by ``cvae``)};
    keys: one PRNG key per example (B,). Each example's key is split: fold 0 turns the
    image into model input (binarization / dequantization), fold 1 draws z, fold 2 the
    denoising corruption, fold 3 the random horizontal flip (``hflip``, training only).
    """

    family: str
    net: nn.Module  # AutoencoderNet, TwoLayerNet or hvae.HierarchicalNet
    likelihood: Likelihood
    spec: InputSpec
    latent_dim: int
    settings: objectives.ObjectiveSettings
    noise_dim: int = 0  # Size of eps: latent_dim for one stochastic layer, D1 + D2 for two, all groups' for hvae.

    @property
    def eps_dim(self) -> int:
        return self.noise_dim or self.latent_dim

    @property
    def prior_dim(self) -> int:
        """Size of the N(0, I) vector ``decode_mean`` turns into a prior sample: the code
        (latent_dim), or for ``hvae`` the noise of every group (ancestral sampling)."""
        return self.eps_dim if self.family == "hvae" else self.latent_dim

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
        return self.net.init(rng, x, jnp.zeros((1, self.eps_dim)), cond)["params"]

    def latent_keys(self, keys: jax.Array) -> jax.Array:
        """Per-example keys (B,) -> the keys that draw z (fold 1), as in training and per_example."""
        return _fold(keys, 1)

    def model_input(self, images: jax.Array, keys: jax.Array) -> jax.Array:
        """uint8 images -> the float input the likelihood scores (per-example key fold 0)."""
        return to_model_input(images, _fold(keys, 0), self.spec)

    def _terms(self, params: Params, batch: dict, keys: jax.Array, noisy: bool) -> dict[str, jax.Array]:
        x = self.model_input(batch["image"], keys)
        if noisy and self.settings.hflip:  # Augmentation: the flipped image is the data (target and input).
            x = random_hflip(x, _fold(keys, 3))
        x_in = corrupt(x, _fold(keys, 2), self.settings.input_noise, self.settings.noise_level) if noisy else x
        cond = self.condition(batch.get("label"))
        eps_keys = self.latent_keys(keys)
        eps = (jnp.zeros((x.shape[0], self.eps_dim)) if self.deterministic else
               jax.vmap(lambda k: jax.random.normal(k, (self.eps_dim,)))(eps_keys))
        out, kl_per_dim, code = self.net.apply({"params": params}, x_in, eps, cond)
        recon = -self.likelihood.log_prob(out, x)
        if self.deterministic:
            return {"loss": recon + self.settings.code_l2 * jnp.sum(jnp.square(code), axis=-1), "recon": recon,
                    "code": code}
        kl = jnp.sum(kl_per_dim, axis=-1)
        return {"nelbo": recon + kl, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim,
                "x": x, "x_in": x_in, "cond": cond}

    def per_example(self, params: Params, batch: dict, keys: jax.Array, kl_per_dim: bool = False
                    ) -> dict[str, jax.Array]:
        """Evaluation terms on clean inputs, each (B,) in nats: ``nelbo``, ``recon``, ``kl``
        (``loss`` and ``recon`` for ``ae``); with ``kl_per_dim`` also that, (B, noise_dim)."""
        terms = self._terms(params, batch, keys, noisy=False)
        names = ("loss", "recon") if self.deterministic else ("nelbo", "recon", "kl")
        names += ("kl_per_dim",) if kl_per_dim and not self.deterministic else ()
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
            log_w = self.log_importance_weights(params, terms["x"], self.latent_keys(keys),
                                                settings.num_importance_samples,
                                                cond=terms["cond"], x_in=terms["x_in"])
            loss = objectives.iwae_loss(log_w)
        else:
            weight = objectives.kl_weight(step, settings.beta, settings.kl_warmup_steps)
            loss = objectives.elbo_loss(terms["recon"], terms["kl_per_dim"], weight, settings.free_bits)
            metrics["kl_weight"] = weight
            if self.family == "hvae":  # KL of each latent group, coarsest first.
                metrics.update({f"kl_group{g}": v for g, v in enumerate(jnp.mean(terms["kl_per_dim"], axis=0))})
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
        index = start + jnp.arange(num_samples)
        draw = lambda key: jax.random.normal(jax.random.fold_in(key, 0), (self.eps_dim,))  # noqa: E731
        eps = jax.vmap(lambda k: jax.vmap(lambda i: draw(jax.random.fold_in(k, i)))(index))(keys)  # (B, S, E)
        out, log_ratio = self.net.apply({"params": params}, x_in, eps, cond, method=type(self.net).sample_and_score)
        return self.likelihood.log_prob(out, x[:, None]) + log_ratio

    def posterior(self, params: Params, x: jax.Array, labels: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
        """Float model input (B, H, W, C) -> q(z|x) mean and logvar, each (B, latent_dim)."""
        return self.net.apply({"params": params}, x, self.condition(labels), method=type(self.net).encode)

    def decode_mean(self, params: Params, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Latents (B, latent_dim) -> mean images (B, H, W, C) in [0, 1]."""
        out = self.net.apply({"params": params}, z, self.condition(labels), method=type(self.net).decode)
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
