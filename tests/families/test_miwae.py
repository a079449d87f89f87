"""MIWAE (jaxae.families.miwae): the loss is minus the mean of M K-sample IWAE bounds of the
family's log-weights, by numpy; M = 1 is the IWAE loss and K = 1 the sampled ELBO."""

import functools

import jax
import numpy as np
import pytest
import scipy.special
from family_helpers import BINARY, binary_images, f64, random_params, train_two_steps_and_sample

from jaxae import inputs
from jaxae.config import Config
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.miwae import MIWAE

TINY = dict(hidden_dims=(16,), latent_dim=3)


@functools.partial(jax.jit, static_argnums=(0, 1))
def loss_and_log_weights(model, num_samples, params, x, keys):
    batch = {"x": x, "x_in": x}
    return model.loss(params, batch, keys), model.log_weights(params, x, keys, num_samples)


def setup(seed=0, **settings):
    model = make_model(Config.create(**TINY, **settings), BINARY)
    params = random_params(model, seed=seed)
    return model, params, binary_images(5, seed=seed + 1), inputs.example_keys(jax.random.key(seed + 2), 5)


def test_loss_is_the_mean_of_m_iwae_bounds_by_numpy():
    """M = 2, K = 3: sample s = m * 3 + k; the loss is -mean_b mean_m [logsumexp_k log w - log 3]."""
    model, params, x, keys = setup(model="miwae", miwae_m=2, num_importance_samples=3)
    assert isinstance(model, MIWAE) and model.samples_per_example == 6
    (loss, scalars), log_w = f64(loss_and_log_weights(model, 6, params, x, keys))
    assert log_w.shape == (5, 6)
    bounds = scipy.special.logsumexp(log_w.reshape(5, 2, 3), axis=2) - np.log(3)
    np.testing.assert_allclose(loss, -bounds.mean(), rtol=1e-6)
    assert scalars["loss"] == loss
    # The grouping matters here: other groupings of the same 6 weights give other numbers.
    for other in (scipy.special.logsumexp(log_w.reshape(5, 3, 2).transpose(0, 2, 1), axis=2) - np.log(3),
                  scipy.special.logsumexp(log_w, axis=1, keepdims=True) - np.log(6)):
        assert abs(-other.mean() - loss) > 1e-2


def test_m_1_is_the_iwae_loss_and_k_1_the_sampled_elbo():
    model, params, x, keys = setup(seed=3, model="miwae", miwae_m=1, num_importance_samples=4)
    iwae = make_model(Config.create(**TINY, model="iwae", num_importance_samples=4), BINARY)
    (loss, _), _ = loss_and_log_weights(model, 4, params, x, keys)
    (iwae_loss, _), _ = loss_and_log_weights(iwae, 4, params, x, keys)
    assert float(loss) == float(iwae_loss)
    model = make_model(Config.create(**TINY, model="miwae", miwae_m=4, num_importance_samples=1), BINARY)
    (loss, _), log_w = f64(loss_and_log_weights(model, 4, params, x, keys))
    np.testing.assert_allclose(loss, -log_w.mean(), rtol=1e-6)


def test_miwae_settings():
    with pytest.raises(ConfigError, match="--miwae_m 2 is not used by --model iwae"):
        make_model(Config.create(model="iwae", miwae_m=2, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--ciwae_beta 0.2 is not used by --model miwae"):
        make_model(Config.create(model="miwae", ciwae_beta=0.2, **TINY), BINARY)
    from jaxae.config.validation import validate

    with pytest.raises(ConfigError, match="^--miwae_m must be > 0, got 0$"):
        validate(Config.create(model="miwae", miwae_m=0))
    model = make_model(Config.create(model="miwae", miwae_m=3, num_importance_samples=2, **TINY), BINARY)
    assert model.bound and model.has_prior and (model.miwae_m, model.num_importance_samples) == (3, 2)


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="miwae", miwae_m=2,
                                                 num_importance_samples=2)
    assert model.miwae_m == 2 and np.isfinite(final["test_nelbo"]) and np.isfinite(final["train_loss"])
