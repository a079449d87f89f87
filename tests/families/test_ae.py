"""The deterministic autoencoder (jaxae.families.ae): loss = -log p(x|z) + code_l2 ||z||^2 with
z the encoder's mean, by hand, on the clean and on the denoising batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from family_helpers import random_params

from jaxae import inputs
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.ae import AE

SHAPE = (6, 6, 1)
BINARY = InputSpec(image_shape=SHAPE, num_classes=10, mode="binary")
TINY = dict(model="ae", hidden_dims=(16,), latent_dim=3)



@functools.partial(jax.jit, static_argnums=(0, 1))
def pieces(model, preprocessing, params, raw, keys, other_keys):
    """A training batch (train=True), the family's loss and evaluation terms on it and on the
    evaluation batch (train=False), the loss with other keys, and the code and decoded mean of
    the encoder's input."""
    batch = preprocessing(raw, keys, train=True)
    clean = preprocessing(raw, keys, train=False)
    code = model.encode(params, batch["x_in"])[0]
    return (batch, model.loss(params, batch, keys), model.loss(params, batch, other_keys)[0],
            model.eval_terms(params, clean, keys), code, model.decode(params, code))


def cross_entropy(probs, x):
    """-log p(x) of binary images under independent Bernoulli probabilities, float64, per image."""
    probs, x = np.asarray(probs, np.float64), np.asarray(x, np.float64)
    return -np.sum(x * np.log(probs) + (1 - x) * np.log1p(-probs), axis=(1, 2, 3))


@pytest.mark.parametrize("noise_level", [0.0, 0.3])
def test_loss_is_reconstruction_plus_code_penalty_on_the_clean_image(noise_level):
    """code_l2 = 0.01: loss = mean_b [-log p(x_b | z_b)] + 0.01 mean_b ||z_b||^2, z_b = the code of
    the encoder's input (corrupted when denoising), the likelihood scoring the clean image."""
    model = make_model(Config.create(code_l2=0.01, **TINY), BINARY)
    assert isinstance(model, AE) and model.deterministic and not model.bound
    params = random_params(model, seed=3)
    rng = np.random.default_rng(4)
    raw = {"image": jnp.asarray(rng.random((8, *SHAPE)) < 0.3, jnp.uint8)}
    keys, other_keys = (inputs.example_keys(jax.random.key(s), 8) for s in (5, 6))
    preprocessing = (inputs.Preprocessing(BINARY, input_noise="flip", noise_level=noise_level) if noise_level
                     else inputs.Preprocessing(BINARY))
    batch, (loss, metrics), other_loss, terms, code, probs = pieces(model, preprocessing, params, raw, keys,
                                                                    other_keys)
    x = np.asarray(raw["image"], np.float64)
    np.testing.assert_array_equal(batch["x"], x)
    assert np.any(np.asarray(batch["x_in"]) != x) == bool(noise_level)
    recon = cross_entropy(probs, x)
    penalty = np.sum(np.asarray(code, np.float64) ** 2, -1)
    assert 0.01 * penalty.mean() > 1e-3                        # The code penalty matters here.
    np.testing.assert_allclose(metrics["recon"], recon.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, recon.mean() + 0.01 * penalty.mean(), rtol=1e-5)
    assert float(metrics["loss"]) == float(loss)
    # Deterministic: the keys change nothing.
    assert float(other_loss) == float(loss)
    # Evaluation scores the clean batch: loss and recon per example, no corruption.
    if noise_level:
        assert abs(float(np.mean(terms["recon"])) - recon.mean()) > 0.1
    else:
        np.testing.assert_allclose(terms["recon"], recon, rtol=1e-5)
        np.testing.assert_allclose(terms["loss"], recon + 0.01 * penalty, rtol=1e-5)
    assert set(terms) == {"loss", "recon"}


def test_code_is_the_posterior_mean_and_there_is_no_noise():
    model = make_model(Config.create(**TINY), BINARY)
    keys = inputs.example_keys(jax.random.key(0), 4)
    np.testing.assert_array_equal(model.noise(keys), np.zeros((4, 3)))
    assert model.prior_dim == model.latent_dim == 3 and model.code_l2 == 0.0


def test_ae_config_rules():
    with pytest.raises(ConfigError, match="--stochastic_layers 2 needs a stochastic model"):
        make_model(Config.create(stochastic_layers=2, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--beta 2.0 is not used by --model ae"):
        make_model(Config.create(beta=2.0, **TINY), BINARY)
    with pytest.raises(ConfigError, match="is a preset of --model hvae"):
        make_model(Config.create(model="ae", arch="hvae_mnist"), BINARY)
