"""WAE-MMD (jaxae.families.wae) and the MMD it shares with infovae (objectives.mmd_imq): the
U-statistic by hand and by numpy loops, the loss by numpy, sampling from N(0, I)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_helpers import (BINARY, binary_images, cross_entropy, f64, mmd_u_statistic, prior_draws, random_params,
                            train_two_steps_and_sample)

from jaxae import inputs, objectives, sampling
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.wae import WAE

TINY = dict(model="wae", hidden_dims=(16,), latent_dim=3)


def test_mmd_of_two_3_point_sets_by_hand():
    """x = {(0,0), (1,0), (0,1)}, y = {(0,0), (2,0), (0,0)}, C = 2 * 2 = 4, k = 4 / (4 + d^2):
    within x: pairs at d^2 1, 1, 2 -> 2 * (4/5 + 4/5 + 4/6); within y: d^2 4, 0, 4 -> 2 * (1/2 + 1 + 1/2);
    across: d^2 (0, 4, 0 / 1, 1, 1 / 1, 5, 1) -> 1 + 1/2 + 1 + 3 * 4/5 + 4/5 + 4/9 + 4/5."""
    x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    within = (2 * (4 / 5 + 4 / 5 + 4 / 6) + 2 * (1 / 2 + 1 + 1 / 2)) / 6
    across = (1 + 1 / 2 + 1 + 3 * 4 / 5 + 4 / 5 + 4 / 9 + 4 / 5) / 9
    np.testing.assert_allclose(objectives.mmd_imq(x, y), within - 2 * across, rtol=1e-6)
    np.testing.assert_allclose(mmd_u_statistic(x, y), within - 2 * across, rtol=1e-12)
    np.testing.assert_allclose(objectives.mmd_imq(x, x), 2 * (4 / 5 + 4 / 5 + 4 / 6) * 2 / 6 - 2 * (
        3 + 4 * 4 / 5 + 2 * 4 / 6) / 9, rtol=1e-5)               # Unbiased: not 0 for equal sets.


def test_mmd_by_numpy_in_more_dimensions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(1.0, 2.0, size=(7, 5))
    np.testing.assert_allclose(objectives.mmd_imq(jnp.asarray(x), jnp.asarray(y)), mmd_u_statistic(x, y), rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        objectives.mmd_imq(jnp.zeros((1, 2)), jnp.zeros((1, 2)))


@functools.partial(jax.jit, static_argnums=0)
def pieces(model, params, x, keys):
    code = model.encode(params, x)[0]
    batch = {"x": x, "x_in": x}
    return (code, model.decode(params, code), model.loss(params, batch, keys), model.eval_terms(params, batch, keys),
            model.example_prior_draws(params, keys))


def test_loss_is_reconstruction_plus_weighted_mmd_to_prior_draws():
    model = make_model(Config.create(mmd_weight=30.0, **TINY), BINARY)
    assert isinstance(model, WAE) and model.deterministic and not model.bound and model.has_prior
    params = random_params(model, seed=20)
    x, keys = binary_images(6, seed=21), inputs.example_keys(jax.random.key(22), 6)
    code, probs, (loss, scalars), terms, draws = f64(pieces(model, params, x, keys))
    np.testing.assert_allclose(draws, prior_draws(keys, 3), rtol=1e-6)
    recon = cross_entropy(probs, x)
    mmd = mmd_u_statistic(code, prior_draws(keys, 3))
    assert 30 * abs(mmd) > 0.1                                    # The MMD term matters here.
    np.testing.assert_allclose(loss, recon.mean() + 30.0 * mmd, rtol=1e-5)
    np.testing.assert_allclose([scalars["recon"], scalars["mmd"]], [recon.mean(), mmd], rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], recon, rtol=1e-5)
    assert set(terms) == {"loss", "recon"}


def test_samples_decode_standard_normal_draws():
    model = make_model(Config.create(**TINY), BINARY)
    params = random_params(model, seed=23)
    rng = jax.random.key(24)
    images = sampling.sample_prior(model, params, rng, 5, 0.5)
    np.testing.assert_allclose(images, model.decode(params, 0.5 * jax.random.normal(rng, (5, 3))), atol=1e-6)


def test_wae_config_rules():
    with pytest.raises(ConfigError, match="--code_l2 0.1 is not used by --model wae"):
        make_model(Config.create(code_l2=0.1, **TINY), BINARY)
    with pytest.raises(ConfigError, match="^--mmd_weight must be >= 0, got -1.0$"):
        validate(Config.create(mmd_weight=-1.0, **TINY))
    with pytest.raises(ConfigError, match="not wae"):
        make_model(Config.create(stochastic_layers=2, **TINY), BINARY)


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="wae", mmd_weight=5.0)
    assert model.mmd_weight == 5.0 and np.isfinite(final["test_recon"]) and "test_nelbo" not in final
    assert np.isfinite(final["train_mmd"])
