import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import objectives
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.models import make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")


def _batch(n=8):
    images = jax.random.bernoulli(jax.random.key(1), 0.3, (n, 28, 28, 1)).astype(jnp.uint8)
    return {"image": images, "label": jnp.arange(n) % 10}, jax.random.split(jax.random.key(2), n)


def test_kl_weight_warmup():
    assert float(objectives.kl_weight(0, 2.0, 0)) == 2.0
    assert float(objectives.kl_weight(50, 2.0, 100)) == pytest.approx(1.0)
    assert float(objectives.kl_weight(500, 2.0, 100)) == pytest.approx(2.0)


def test_elbo_loss_by_hand_with_free_bits():
    recon = jnp.array([10.0, 20.0])
    kl_per_dim = jnp.array([[0.1, 2.0], [0.3, 4.0]])   # batch means 0.2 and 3.0
    assert float(objectives.elbo_loss(recon, kl_per_dim)) == pytest.approx(15.0 + 3.2)
    assert float(objectives.elbo_loss(recon, kl_per_dim, 0.5)) == pytest.approx(15.0 + 1.6)
    assert float(objectives.elbo_loss(recon, kl_per_dim, 1.0, free_bits=0.5)) == pytest.approx(15.0 + 0.5 + 3.0)


def test_iwae_loss_by_hand():
    log_w = jnp.log(jnp.array([[1.0, 3.0], [2.0, 2.0]]))
    assert float(objectives.iwae_loss(log_w)) == pytest.approx(-(math.log(2.0) + math.log(2.0)) / 2)
    assert float(objectives.iwae_loss(log_w[:, :1])) == pytest.approx(-(0.0 + math.log(2.0)) / 2)


def test_beta_1_is_the_vae_and_beta_scales_the_kl():
    batch, keys = _batch()
    vae = make_model(Config(model="vae", hidden_dims=(32,), latent_dim=4), SPEC)
    params = vae.init(jax.random.key(0))
    loss, metrics = vae.loss(params, batch, keys)
    np.testing.assert_allclose(loss, metrics["nelbo"], rtol=1e-6)
    beta1 = make_model(Config(model="beta_vae", beta=1.0, hidden_dims=(32,), latent_dim=4), SPEC)
    np.testing.assert_allclose(beta1.loss(params, batch, keys)[0], loss, rtol=1e-6)
    beta4 = make_model(Config(model="beta_vae", beta=4.0, hidden_dims=(32,), latent_dim=4), SPEC)
    np.testing.assert_allclose(beta4.loss(params, batch, keys)[0], metrics["recon"] + 4 * metrics["kl"], rtol=1e-5)
    warm = make_model(Config(model="vae", kl_warmup_steps=10, hidden_dims=(32,), latent_dim=4), SPEC)
    np.testing.assert_allclose(warm.loss(params, batch, keys, 5)[0], metrics["recon"] + 0.5 * metrics["kl"],
                               rtol=1e-5)


def test_iwae_with_k_1_equals_the_vae_objective_in_expectation():
    """K = 1: log w = log p(x|z) + log p(z) - log q(z|x), whose mean over z ~ q is the ELBO
    (the VAE computes the KL part in closed form)."""
    batch, keys = _batch(4)
    iwae = make_model(Config(model="iwae", num_importance_samples=1, hidden_dims=(32,), latent_dim=4), SPEC)
    params = iwae.init(jax.random.key(0))
    fold = jax.vmap(jax.random.fold_in, (0, None))
    rep_keys = jax.vmap(lambda r: fold(keys, r))(jnp.arange(5000))             # (5000, 4)
    nelbo_reps = jax.vmap(lambda k: iwae.per_example(params, batch, k)["nelbo"])(rep_keys)
    nelbo = jnp.mean(nelbo_reps, axis=0)
    x = iwae.model_input(batch["image"], keys)
    log_w = iwae.log_importance_weights(params, x, keys, 20000)                # (4, 20000) single-sample bounds
    noise = np.sqrt(np.var(log_w, axis=1) / log_w.shape[1] + np.var(nelbo_reps, axis=0) / len(nelbo_reps))
    assert np.all(np.abs(-jnp.mean(log_w, axis=1) - nelbo) < 4 * noise), (-jnp.mean(log_w, axis=1), nelbo, noise)
    # One training loss with K = 1 is the IWAE loss of one sample: its mean over keys is the NELBO.
    losses = jax.vmap(lambda k: iwae.loss(params, batch, k)[0])(rep_keys)
    assert abs(float(jnp.mean(losses) - jnp.mean(nelbo))) < 4 * np.sqrt(2 * np.var(losses) / len(losses))
    # K = 50 is a tighter bound than K = 1.
    iwae50 = make_model(Config(model="iwae", num_importance_samples=50, hidden_dims=(32,), latent_dim=4), SPEC)
    assert float(iwae50.loss(params, batch, keys)[0]) < float(np.mean(nelbo)) - 0.1


def test_autoencoder_loss_is_reconstruction_plus_code_penalty():
    batch, keys = _batch(4)
    ae = make_model(Config(model="ae", code_l2=0.01, hidden_dims=(32,), latent_dim=4), SPEC)
    params = ae.init(jax.random.key(0))
    loss, metrics = ae.loss(params, batch, keys)
    code = ae.encode(params, batch["image"])[0]
    out = ae.decode_mean(params, code)
    x = batch["image"].astype(jnp.float32)
    bce = -jnp.sum(x * jnp.log(out) + (1 - x) * jnp.log1p(-out), axis=(1, 2, 3))
    np.testing.assert_allclose(metrics["recon"], jnp.mean(bce), rtol=1e-4)
    np.testing.assert_allclose(loss, jnp.mean(bce) + 0.01 * jnp.mean(jnp.sum(code**2, -1)), rtol=1e-4)
    # Deterministic: no key dependence.
    np.testing.assert_allclose(ae.loss(params, batch, jax.random.split(jax.random.key(9), 4))[0], loss, rtol=1e-6)


def test_denoising_corrupts_the_encoder_input_only():
    batch, keys = _batch(4)
    clean = make_model(Config(model="ae", hidden_dims=(32,), latent_dim=4), SPEC)
    noisy = make_model(Config(model="ae", hidden_dims=(32,), latent_dim=4, input_noise="flip", noise_level=0.3),
                       SPEC)
    params = clean.init(jax.random.key(0))
    # Evaluation (per_example) sees clean inputs; training sees flipped pixels but scores the clean image.
    np.testing.assert_allclose(noisy.per_example(params, batch, keys)["recon"],
                               clean.per_example(params, batch, keys)["recon"], rtol=1e-6)
    assert not np.allclose(noisy.loss(params, batch, keys)[0], clean.loss(params, batch, keys)[0])


def test_cvae_decoder_depends_on_the_label():
    cvae = make_model(Config(model="cvae", hidden_dims=(32,), latent_dim=4), SPEC)
    params = cvae.init(jax.random.key(0))
    z = jnp.zeros((2, 4))
    a = cvae.decode_mean(params, z, jnp.array([1, 1]))
    b = cvae.decode_mean(params, z, jnp.array([1, 2]))
    np.testing.assert_allclose(a[0], b[0])
    assert not np.allclose(a[1], b[1])


def test_two_stochastic_layers_elbo_and_iwae_agree_in_expectation():
    """Burda et al.'s x-z1-z2 model: the training pass's NELBO (z1 term sampled, z2's KL in
    closed form) and -log w of the importance-sampling pass estimate the same -ELBO."""
    config = Config(model="iwae", stochastic_layers=2, hidden_dims=(32,), latent_dim=6, top_latent_dim=3,
                    top_hidden_dims=(16,), num_importance_samples=5)
    model = make_model(config, SPEC)
    assert model.latent_dim == 3 and model.eps_dim == 9
    params = model.init(jax.random.key(0))
    assert set(params) == {"x_encoder", "z_encoder", "z_decoder", "x_decoder"}
    batch, keys = _batch(3)
    fold = jax.vmap(jax.random.fold_in, (0, None))
    rep_keys = jax.vmap(lambda r: fold(keys, r))(jnp.arange(4000))
    reps = jax.vmap(lambda k: model.per_example(params, batch, k, kl_per_dim=True))(rep_keys)
    assert reps["kl_per_dim"].shape == (4000, 3, 9)
    np.testing.assert_allclose(reps["kl_per_dim"].sum(-1), reps["kl"], rtol=1e-5)
    x = model.model_input(batch["image"], keys)
    log_w = model.log_importance_weights(params, x, keys, 20000)
    noise = np.sqrt(np.var(log_w, axis=1) / 20000 + np.var(reps["nelbo"], axis=0) / 4000)
    assert np.all(np.abs(-jnp.mean(log_w, axis=1) - jnp.mean(reps["nelbo"], 0)) < 4 * noise)
    # The K = 5 IWAE loss is below the single-sample bound, and samples decode from z2.
    assert float(model.loss(params, batch, keys)[0]) < float(jnp.mean(reps["nelbo"]))
    assert model.decode_mean(params, jnp.zeros((2, 3))).shape == (2, 28, 28, 1)
