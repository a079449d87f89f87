"""The IWAE family (jaxae.families.iwae): its training loss is objectives.iwae_loss of the
family's log-weights, the log-weights are log p(x|z) + log p(z) - log q(z|x) by hand, and
with one and two stochastic layers they estimate the same bound as the closed-form NELBO."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from family_helpers import random_params

from jaxae import inputs, objectives
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.iwae import IWAE
from jaxae.nets import OneLayerNet

SHAPE = (6, 6, 1)
BINARY = InputSpec(image_shape=SHAPE, num_classes=10, mode="binary")
TINY = dict(model="iwae", hidden_dims=(16,), latent_dim=3)
LOG_2PI = math.log(2 * math.pi)



def binary_images(n: int, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((n, *SHAPE)) < 0.3, jnp.uint8)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def bound_pieces(model, params, x, keys, num_samples, reps):
    """log_weights (B, num_samples), and the closed-form pass's terms for ``reps`` independent
    noise draws (reps, B)."""
    batch = {"x": x, "x_in": x}
    log_w = model.log_weights(params, x, keys, num_samples)
    return log_w, jax.vmap(lambda r: model.eval_terms(params, batch, inputs.fold(keys, r)))(jnp.arange(reps))


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


@functools.partial(jax.jit, static_argnums=(0, 1))
def denoising_step_pieces(model, preprocessing, params, raw, keys, other_keys):
    """What a denoising train step computes, and the same pieces asked of the family directly
    (one program: one compilation)."""
    batch = preprocessing(raw, keys, train=True)
    log_w = model.log_weights(params, batch["x"], keys, model.num_importance_samples, 0,
                              model.condition(batch["label"]), batch["x_in"])
    return (batch, model.loss(params, batch, keys), log_w, objectives.iwae_loss(log_w),
            model.eval_terms(params, batch, keys), model.loss(params, batch, other_keys)[0])


def test_training_loss_is_iwae_loss_of_the_log_weights_with_the_same_keys():
    """K = 5, random params, a denoising batch (x_in corrupted, x clean) with the labels of a
    conditional model: the loss is iwae_loss(log_weights(x, keys, K, cond, x_in)) exactly.
    (Unconditional, with two stochastic layers: test_two_stochastic_layers_...)"""
    model = make_model(Config.create(num_importance_samples=5, conditional=True, **TINY), BINARY)
    assert isinstance(model, IWAE) and model.num_importance_samples == 5
    params = random_params(model, seed=1)
    keys, other_keys = (inputs.example_keys(jax.random.key(seed), 8) for seed in (2, 3))
    raw = {"image": binary_images(8), "label": jnp.arange(8) % 10}
    preprocessing = inputs.Preprocessing(BINARY, input_noise="flip", noise_level=0.2)
    batch, (loss, metrics), log_w, expected, terms, other_loss = denoising_step_pieces(
        model, preprocessing, params, raw, keys, other_keys)
    assert np.any(np.asarray(batch["x_in"]) != np.asarray(batch["x"]))
    assert log_w.shape == (8, 5)
    assert float(loss) == float(expected)
    assert float(metrics["loss"]) == float(loss)
    # Other keys draw other samples: a different loss.
    assert abs(float(other_loss) - float(loss)) > 1e-3
    # The logged NELBO, recon and KL are the closed-form pass's, as the VAE's.
    terms = f64(terms)
    np.testing.assert_allclose(metrics["nelbo"], terms["nelbo"].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["recon"], terms["recon"].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], terms["kl"].mean(), rtol=1e-6)


@functools.partial(jax.jit, static_argnums=(0, 3))
def log_weights_by_hand(model, params, x, num_samples, keys):
    """log w_s = log p(x|z_s) + log N(z_s; 0, I) - log q(z_s|x), z_s = mean + std * eps_s with
    eps_s = N(0, I) from fold_in(fold_in(fold_in(key, MODEL_FOLD), s), 0); the densities in
    numpy below, so only the encoder, the decoder and the likelihood come from the library."""
    mean, logvar = model.encode(params, x)
    model_keys = inputs.fold(keys, inputs.MODEL_FOLD)
    eps = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, s), 0),
                                                                  (model.noise_dim,)))(jnp.arange(num_samples)))(
        model_keys)                                                                     # (B, S, D)
    z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps
    logits = model.net.apply({"params": params}, z.reshape(-1, z.shape[-1]), method=OneLayerNet.decode)
    log_px = model.likelihood.log_prob(logits.reshape(*z.shape[:2], *logits.shape[1:]), x[:, None])
    return ((log_px, z, mean, logvar), model.log_weights(params, x, keys, num_samples),
            model.log_weights(params, x, keys, num_samples, start=2))


def test_log_weights_by_hand():
    model = make_model(Config.create(num_importance_samples=4, **TINY), BINARY)
    params = random_params(model, seed=4)
    keys = inputs.example_keys(jax.random.key(5), 3)
    x = jnp.asarray(binary_images(3), jnp.float32)
    (log_px, z, mean, logvar), got, chunk = f64(log_weights_by_hand(model, params, x, 4, keys))
    log_prior = np.sum(-0.5 * (LOG_2PI + z**2), -1)
    log_q = np.sum(-0.5 * (LOG_2PI + logvar[:, None] + (z - mean[:, None]) ** 2 / np.exp(logvar[:, None])), -1)
    assert np.all(np.abs(log_prior - log_q) > 0.1)                  # The latent terms matter.
    np.testing.assert_allclose(got, log_px + log_prior - log_q, rtol=1e-5, atol=1e-4)
    # Samples s = 2 .. 5 drawn on their own (start=2) are the same samples: chunking changes nothing.
    np.testing.assert_allclose(chunk[:, :2], got[:, 2:], rtol=1e-6)


def test_k_1_is_the_elbo_in_expectation_and_k_50_is_tighter():
    """K = 1: log w = log p(x|z) + log p(z) - log q(z|x), whose mean over z ~ q is the ELBO
    (the VAE's closed-form KL); the K = 50 bound is above it by more than the noise."""
    model = make_model(Config.create(num_importance_samples=1, **TINY), BINARY)
    params = random_params(model, seed=0, scale=0.7)
    x = jnp.asarray(binary_images(4), jnp.float32)
    keys = inputs.example_keys(jax.random.key(2), 4)
    log_w, terms = f64(bound_pieces(model, params, x, keys, 20000, 4000))     # (4, 20000), (4000, 4)
    reps = terms["nelbo"]
    noise = np.sqrt(log_w.var(1) / log_w.shape[1] + reps.var(0) / len(reps))
    assert np.all(noise < 0.1), noise
    assert np.all(np.abs(-log_w.mean(1) - reps.mean(0)) < 4 * noise), (-log_w.mean(1), reps.mean(0), noise)
    # IWAE_50 per example, averaged over 400 independent estimates, is above the ELBO.
    iwae50 = scipy.special.logsumexp(log_w.reshape(4, 400, 50), -1) - math.log(50)
    gap = iwae50.mean(1) - log_w.mean(1)
    assert np.all(gap > 10 * np.sqrt(iwae50.var(1) / 400 + log_w.var(1) / 20000)), gap


def test_two_stochastic_layers_elbo_and_iwae_agree_in_expectation():
    """Burda et al.'s x-z1-z2 model: the training pass's NELBO (z1 term sampled, z2's KL in
    closed form) and -log w of the importance-sampling pass estimate the same -ELBO. (Its
    layers by hand: tests/nets/test_nets.py.)"""
    config = Config.create(model="iwae", stochastic_layers=2, hidden_dims=(16,), latent_dim=4, top_latent_dim=3,
                           top_hidden_dims=(8,), num_importance_samples=5)
    model = make_model(config, BINARY)
    assert model.latent_dim == 3 and model.noise_dim == 7 and model.prior_dim == 3
    params = random_params(model, seed=0, scale=0.7)
    assert set(params) == {"x_encoder", "z_encoder", "z_decoder", "x_decoder"}
    x = jnp.asarray(binary_images(3), jnp.float32)
    keys = inputs.example_keys(jax.random.key(2), 3)
    log_w, reps = f64(bound_pieces(model, params, x, keys, 20000, 4000))
    assert reps["kl_per_unit"].shape == (4000, 3, 7)
    np.testing.assert_allclose(reps["kl_per_unit"].sum(-1), reps["kl"], rtol=1e-5, atol=1e-5)
    noise = np.sqrt(log_w.var(1) / 20000 + reps["nelbo"].var(0) / 4000)
    assert np.all(noise < 0.3), noise
    assert np.all(np.abs(-log_w.mean(1) - reps["nelbo"].mean(0)) < 4 * noise)
    # Samples decode from z2.
    assert jax.eval_shape(model.decode, params, jnp.zeros((2, 3))).shape == (2, *SHAPE)


def test_iwae_settings():
    with pytest.raises(ConfigError, match="--free_bits 0.5 is not used by --model iwae"):
        make_model(Config.create(free_bits=0.5, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--beta 2.0 is not used by --model iwae"):
        make_model(Config.create(beta=2.0, **TINY), BINARY)
    model = make_model(Config.create(num_importance_samples=7, **TINY), BINARY)
    assert model.name == "iwae" and model.bound and model.num_importance_samples == 7
