"""InfoVAE (jaxae.families.infovae): loss = recon + beta KL + mmd_weight MMD^2(z ~ q, N(0, I)),
by numpy at random parameters; beta 1 and mmd_weight 0 is the VAE's loss."""


import jax
import numpy as np
import pytest
from family_helpers import (BINARY, binary_images, cross_entropy, f64, mmd_u_statistic, posterior_pieces, prior_draws,
                            random_params, train_two_steps_and_sample)

from jaxae import inputs
from jaxae.config import Config
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.infovae import InfoVAE

TINY = dict(model="infovae", hidden_dims=(16,), latent_dim=3)


def test_loss_by_numpy():
    models = (make_model(Config.create(beta=0.3, mmd_weight=40.0, **TINY), BINARY),
              make_model(Config.create(beta=1.0, mmd_weight=0.0, **TINY), BINARY),
              make_model(Config.create(model="vae", hidden_dims=(16,), latent_dim=3), BINARY))
    assert isinstance(models[0], InfoVAE) and models[0].bound and (models[0].beta, models[0].mmd_weight) == (0.3, 40)
    params = random_params(models[0], seed=30)
    x, keys = binary_images(6, seed=31), inputs.example_keys(jax.random.key(32), 6)
    mean, logvar, z, probs, losses = f64(posterior_pieces(models, params, x, keys))
    (loss, scalars), (vae_like, _), (vae_loss, _) = losses
    recon = cross_entropy(probs, x)
    kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=1)
    mmd = mmd_u_statistic(z, prior_draws(keys, 3))
    assert 40 * abs(mmd) > 0.1 and abs(mmd - mmd_u_statistic(mean, prior_draws(keys, 3))) > 1e-3
    np.testing.assert_allclose(loss, recon.mean() + 0.3 * kl.mean() + 40.0 * mmd, rtol=1e-5)
    np.testing.assert_allclose([scalars["nelbo"], scalars["kl"], scalars["mmd"]],
                               [(recon + kl).mean(), kl.mean(), mmd], rtol=1e-5)
    np.testing.assert_allclose(vae_like, vae_loss, rtol=1e-6)


def test_infovae_config_rules():
    with pytest.raises(ConfigError, match="one stochastic layer"):
        make_model(Config.create(stochastic_layers=2, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--num_importance_samples 3 is not used by --model infovae"):
        make_model(Config.create(num_importance_samples=3, **TINY), BINARY)


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="infovae", beta=0.5,
                                                 mmd_weight=100.0)
    assert model.beta == 0.5 and np.isfinite(final["test_nelbo"]) and np.isfinite(final["train_mmd"])
