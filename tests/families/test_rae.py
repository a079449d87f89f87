"""RAE-L2 and RAE-GP (jaxae.families.rae): recon + code_l2 ||z||^2 + decoder_reg R with R the
decoder parameters' squared norm (numpy) or the squared Frobenius norm of the decoder's
Jacobian at the code (central finite differences); sampled through the fitted density."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_helpers import BINARY, binary_images, cross_entropy, f64, random_params, train_two_steps_and_sample

from jaxae import inputs
from jaxae.config import Config
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.rae import RAEGP, RAEL2

TINY = dict(hidden_dims=(16,), latent_dim=3, code_l2=0.05, activation="tanh")


@functools.partial(jax.jit, static_argnums=0)
def pieces(model, params, x, keys):
    code = model.encode(params, x)[0]
    batch = {"x": x, "x_in": x}
    return code, model.decode(params, code), model.loss(params, batch, keys), model.eval_terms(params, batch, keys)


def setup(name, decoder_reg, seed):
    model = make_model(Config.create(model=name, decoder_reg=decoder_reg, **TINY), BINARY)
    params = random_params(model, seed=seed)
    x, keys = binary_images(5, seed=seed + 1), inputs.example_keys(jax.random.key(seed + 2), 5)
    return model, params, x, keys, f64(pieces(model, params, x, keys))


def test_rae_l2_penalises_the_decoders_parameters():
    model, params, x, _, (code, probs, (loss, scalars), terms) = setup("rae_l2", 0.02, seed=40)
    assert isinstance(model, RAEL2) and model.deterministic and not model.has_prior
    squares = {name: sum(np.sum(np.asarray(p, np.float64) ** 2) for p in jax.tree.leaves(params[name]))
               for name in ("encoder", "decoder")}
    assert set(params) == {"encoder", "decoder"} and 0.02 * squares["encoder"] > 1e-2   # Leaving it out matters.
    recon = cross_entropy(probs, x)
    code_term = 0.05 * np.sum(code**2, axis=1)
    assert code_term.mean() > 1e-3
    np.testing.assert_allclose(loss, recon.mean() + code_term.mean() + 0.02 * squares["decoder"], rtol=1e-5)
    np.testing.assert_allclose(scalars["decoder_penalty"], squares["decoder"], rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], recon + code_term + 0.02 * squares["decoder"], rtol=1e-5)
    np.testing.assert_allclose(terms["recon"], recon, rtol=1e-5)


def test_rae_gp_penalises_the_decoders_jacobian_by_finite_differences():
    model, params, x, _, (code, probs, (loss, scalars), terms) = setup("rae_gp", 0.5, seed=50)
    assert isinstance(model, RAEGP)
    h = 1e-2
    jac = np.stack([(np.asarray(model.decode(params, jnp.asarray(code + h * e, jnp.float32)), np.float64)
                     - np.asarray(model.decode(params, jnp.asarray(code - h * e, jnp.float32)), np.float64)) / (2 * h)
                    for e in np.eye(3)], axis=-1)                  # (B, H, W, C, D): d mean image / d z_d
    penalty = np.sum(jac**2, axis=(1, 2, 3, 4))
    assert np.all(penalty > 1e-3) and np.std(penalty) > 1e-3 * np.mean(penalty)
    np.testing.assert_allclose(scalars["decoder_penalty"], penalty.mean(), rtol=2e-3)
    recon = cross_entropy(probs, x)
    code_term = 0.05 * np.sum(code**2, axis=1)
    np.testing.assert_allclose(loss, recon.mean() + code_term.mean() + 0.5 * scalars["decoder_penalty"], rtol=1e-6)
    np.testing.assert_allclose(terms["loss"], recon + code_term + 0.5 * penalty, rtol=1e-4)


@pytest.mark.parametrize("name", ["rae_l2", "rae_gp"])
def test_rae_config_rules(name):
    with pytest.raises(ConfigError, match=f"--model {name} needs --decoder_reg > 0"):
        make_model(Config.create(model=name, hidden_dims=(16,), latent_dim=3), BINARY)
    with pytest.raises(ConfigError, match="--decoder_reg 0.1 is not used by --model ae"):
        make_model(Config.create(model="ae", decoder_reg=0.1), BINARY)
    with pytest.raises(ConfigError, match=f"not {name}"):
        make_model(Config.create(model=name, decoder_reg=0.1, stochastic_layers=2), BINARY)


@pytest.mark.parametrize("name", ["rae_l2", "rae_gp"])
def test_trains_two_steps_and_samples_through_the_fitted_density(name, tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model=name, decoder_reg=1e-3,
                                                 code_l2=1e-3)
    assert model.decoder_reg == 1e-3 and np.isfinite(final["test_loss"]) and "test_nelbo" not in final
    assert np.isfinite(final["train_decoder_penalty"])
