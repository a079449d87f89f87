"""CIWAE (jaxae.families.ciwae): loss = -(beta ELBO_K + (1 - beta) IWAE_K) on the same K samples,
by numpy; beta = 1 is the sampled ELBO, beta = 0 the IWAE loss."""

import functools

import jax
import numpy as np
import pytest
import scipy.special
from family_helpers import BINARY, binary_images, f64, random_params, train_two_steps_and_sample

from jaxae import inputs
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.ciwae import CIWAE

TINY = dict(model="ciwae", hidden_dims=(16,), latent_dim=3, num_importance_samples=4)


@functools.partial(jax.jit, static_argnums=0)
def pieces(models, params, x, keys):
    batch = {"x": x, "x_in": x}
    return [m.loss(params, batch, keys) for m in models], models[0].log_weights(params, x, keys, 4)


def test_loss_is_the_convex_combination_by_numpy():
    models = tuple(make_model(Config.create(ciwae_beta=b, **TINY), BINARY) for b in (0.3, 1.0, 0.0))
    iwae = make_model(Config.create(**dict(TINY, model="iwae")), BINARY)
    assert isinstance(models[0], CIWAE) and models[0].ciwae_beta == 0.3
    params = random_params(models[0], seed=5)
    x, keys = binary_images(6, seed=6), inputs.example_keys(jax.random.key(7), 6)
    losses, log_w = f64(pieces((*models, iwae), params, x, keys))
    elbo = log_w.mean()
    iwae_bound = (scipy.special.logsumexp(log_w, axis=1) - np.log(4)).mean()
    assert iwae_bound - elbo > 0.1                                  # The two bounds differ here.
    (loss, scalars), (loss_1, _), (loss_0, _), (iwae_loss, _) = losses
    np.testing.assert_allclose(loss, -(0.3 * elbo + 0.7 * iwae_bound), rtol=1e-6)
    np.testing.assert_allclose([scalars["elbo_k"], scalars["iwae_k"]], [-elbo, -iwae_bound], rtol=1e-6)
    np.testing.assert_allclose(loss_1, -elbo, rtol=1e-6)
    assert loss_0 == iwae_loss
    assert scalars["loss"] == loss


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_beta_outside_0_1_is_refused(beta):
    with pytest.raises(ConfigError, match=rf"^--ciwae_beta must be in \[0, 1\], got {beta}$"):
        validate(Config.create(ciwae_beta=beta, **TINY))


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="ciwae", ciwae_beta=0.5,
                                                 num_importance_samples=2)
    assert model.ciwae_beta == 0.5 and np.isfinite(final["test_nelbo"]) and "train_iwae_k" in final
