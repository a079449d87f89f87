"""The VampPrior VAE (jaxae.families.vamp): log p(z) is the log-mean-exp of the Gaussian
densities of the encoder's posteriors at the pseudo-inputs (in numpy), the loss and the
IWAE log-weights use it, and prior draws and samples come from the mixture, not N(0, I)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from family_helpers import BINARY, binary_images, f64, random_params, train_two_steps_and_sample

from jaxae import evaluation, inputs, sampling
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.vamp import VAMP, VampNet

TINY = dict(model="vamp", hidden_dims=(16,), latent_dim=3, vamp_components=4, kl_warmup_steps=10)
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z, mean, logvar):
    """numpy: log N(z; mean, diag e^logvar) summed over the last axis."""
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mean) ** 2 / np.exp(logvar), axis=-1)


def vamp_log_prior(z, means, logvars):
    """numpy: log (1/K) sum_k N(z; means_k, e^logvars_k); z (..., D), means (K, D)."""
    log_q = gaussian_log_prob(z[..., None, :], means, logvars)
    return scipy.special.logsumexp(log_q, axis=-1) - np.log(len(means))


@functools.partial(jax.jit, static_argnums=(0, 4))
def pieces(model, params, x, keys, num_samples):
    """What the tests compare: the components (encoder at sigmoid(pseudo-inputs)), q(z|x), the
    posterior noise of the loss and of the log-weights, decoder log-likelihoods at given codes,
    and the library's numbers."""
    pseudo = jax.nn.sigmoid(params["pseudo_inputs"])
    comp_mean, comp_logvar = model.encode(params, pseudo)
    mean, logvar = model.encode(params, x)
    eps = model.noise(keys)
    model_keys = inputs.fold(keys, inputs.MODEL_FOLD)
    eps_s = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, s), 0),
                                                                    (3,)))(jnp.arange(num_samples)))(model_keys)
    z = mean + jnp.exp(0.5 * logvar) * eps
    z_s = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps_s
    decode = lambda v: model.net.apply({"params": params}, v, method=VampNet.decode)  # noqa: E731
    log_px = model.likelihood.log_prob(decode(z), x)
    log_px_s = model.likelihood.log_prob(decode(z_s.reshape(-1, 3)).reshape(*z_s.shape[:2], *x.shape[1:]), x[:, None])
    batch = {"x": x, "x_in": x}
    return dict(warm_loss=model.loss(params, batch, keys, 4)[0],
                comp_mean=comp_mean, comp_logvar=comp_logvar, mean=mean, logvar=logvar, z=z, z_s=z_s, log_px=log_px,
                log_px_s=log_px_s, log_prior=model.log_prior(params, z_s), loss=model.loss(params, batch, keys, 10),
                log_w=model.log_weights(params, x, keys, num_samples), terms=model.eval_terms(params, batch, keys))


@pytest.fixture(scope="module")
def case():
    model = make_model(Config.create(**TINY), BINARY)
    params = random_params(model, seed=11, scale=0.8)
    x, keys = binary_images(5, seed=12), inputs.example_keys(jax.random.key(13), 5)
    return model, params, f64(pieces(model, params, x, keys, 6))


def test_log_prior_is_the_log_mean_exp_of_the_components_densities(case):
    model, params, p = case
    assert isinstance(model, VAMP) and params["pseudo_inputs"].shape == (4, 6, 6, 1)
    expected = vamp_log_prior(p["z_s"], p["comp_mean"], p["comp_logvar"])
    np.testing.assert_allclose(p["log_prior"], expected, rtol=1e-5)
    # Not N(0, I), nor one component alone: the mixture matters here.
    assert np.max(np.abs(expected - gaussian_log_prob(p["z_s"], 0.0, 0.0))) > 0.5
    single = gaussian_log_prob(p["z_s"], p["comp_mean"][0], p["comp_logvar"][0])
    assert np.max(np.abs(expected - single)) > 0.5


def test_loss_is_the_negative_elbo_with_a_monte_carlo_kl(case):
    """loss = mean_b [-log p(x|z) + w (log q(z|x) - log p_vamp(z))], z = mean + std * noise(keys), w
    the warm-up's KL weight."""
    _, _, p = case
    kl = gaussian_log_prob(p["z"], p["mean"], p["logvar"]) - vamp_log_prior(p["z"], p["comp_mean"], p["comp_logvar"])
    (loss, scalars), terms = p["loss"], p["terms"]
    np.testing.assert_allclose(loss, np.mean(-p["log_px"] + kl), rtol=1e-5)
    # --kl_warmup_steps 10: at step 4 the KL's weight is 0.4.
    np.testing.assert_allclose(p["warm_loss"], np.mean(-p["log_px"] + 0.4 * kl), rtol=1e-5)
    assert scalars["kl_weight"] == 1.0
    np.testing.assert_allclose([scalars["recon"], scalars["kl"]], [-p["log_px"].mean(), kl.mean()], rtol=1e-5)
    np.testing.assert_allclose(terms["nelbo"], -p["log_px"] + kl, rtol=1e-5)
    assert terms["kl_per_unit"].shape == (5, 1)


def test_log_weights_use_the_vamp_prior(case):
    """What evaluation's IWAE bound sums: log p(x|z_s) + log p_vamp(z_s) - log q(z_s|x)."""
    _, _, p = case
    log_q = gaussian_log_prob(p["z_s"], p["mean"][:, None], p["logvar"][:, None])
    expected = p["log_px_s"] + vamp_log_prior(p["z_s"], p["comp_mean"], p["comp_logvar"]) - log_q
    np.testing.assert_allclose(p["log_w"], expected, rtol=1e-5, atol=1e-4)


def test_iwae_bound_of_evaluation_uses_log_weights(case):
    model, params, _ = case
    x, keys = binary_images(5, seed=12), inputs.example_keys(jax.random.key(13), 5)
    got = evaluation.iwae_log_likelihood(model, params, x, keys, 6, 3)
    log_w = np.asarray(jax.jit(model.log_weights, static_argnums=3)(params, x, keys, 6), np.float64)
    np.testing.assert_allclose(got, scipy.special.logsumexp(log_w, 1) - np.log(6), rtol=1e-5)


def test_prior_draws_and_samples_come_from_the_mixture(case):
    """z = mu_k + temperature * sigma_k * eps with (component_key, noise_key) = split(rng),
    k = randint(component_key, 0..K-1), eps = N(0, I) from noise_key; sample_prior decodes them."""
    model, params, p = case
    rng = jax.random.key(14)
    component_key, noise_key = jax.random.split(rng)
    k = np.asarray(jax.random.randint(component_key, (400,), 0, 4))
    eps = np.asarray(jax.random.normal(noise_key, (400, 3)), np.float64)
    expected = p["comp_mean"][k] + 0.7 * np.exp(0.5 * p["comp_logvar"][k]) * eps
    draws = np.asarray(model.prior_draws(params, rng, 400, 0.7), np.float64)
    np.testing.assert_allclose(draws, expected, rtol=1e-5, atol=1e-6)
    assert set(k) == {0, 1, 2, 3}
    images = sampling.sample_prior(model, params, rng, 400, 0.7)
    np.testing.assert_allclose(images, model.decode(params, jnp.asarray(draws, jnp.float32)), atol=1e-6)


def test_vamp_config_rules():
    with pytest.raises(ConfigError, match="^--vamp_components must be > 0, got 0$"):
        validate(Config.create(**dict(TINY, vamp_components=0)))
    with pytest.raises(ConfigError, match="one stochastic layer"):
        make_model(Config.create(stochastic_layers=2, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--vamp_components 4 is not used by --model vae"):
        make_model(Config.create(**dict(TINY, model="vae")), BINARY)
    assert make_model(Config.create(model="vamp"), BINARY).vamp_components == 500


@pytest.mark.parametrize("settings", [dict(conditional=True), dict(condition="lowres", lowres_factor=2)])
def test_conditioned_prior_gives_each_pseudo_input_its_own_condition(settings):
    """p(z) = (1/K) sum_k q(z | u_k, c_k), the same for every condition of the data: c_k is a
    learned soft label softmax(l_k) (label) or u_k's own 2x2 box average (lowres), by hand in
    numpy, at random parameters (l_k away from uniform); encoder and decoder see the data's
    condition."""
    model = make_model(Config.create(**TINY, **settings), BINARY)
    params = random_params(model, seed=21, scale=0.8)
    u = 1.0 / (1.0 + np.exp(-np.asarray(params["pseudo_inputs"], np.float64)))            # (4, 6, 6, 1)
    if model.conditioning.kind == "label":
        logits = np.asarray(params["pseudo_labels"], np.float64)                         # (4, 10)
        assert logits.shape == (4, 10) and np.ptp(logits) > 0.5
        cond = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        given = jnp.array([3, 7])
    else:
        assert set(params) == {"encoder", "decoder", "pseudo_inputs"}
        cond = u.reshape(4, 3, 2, 3, 2, 1).mean(axis=(2, 4))                               # (4, 3, 3, 1)
        given = jnp.asarray(binary_images(2, seed=22)[:, ::2, ::2])                        # any (2, 3, 3, 1)
    z = jax.random.normal(jax.random.key(23), (2, 3))

    @jax.jit
    def pieces(params, u, cond):
        """One compiled call: the components' statistics with the hand-made conditions and
        with them zeroed, log p(z), and one prior draw decoded under two conditions."""
        encode = lambda c: model.net.apply({"params": params}, u, c, method=VampNet.encode)  # noqa: E731
        v = model.prior_draws(params, jax.random.key(24), 1)
        return dict(components=encode(cond), zeroed=encode(jnp.zeros_like(cond)), log_prior=model.log_prior(params, z),
                    images=[model.decode(params, v, given[i:i + 1]) for i in (0, 1)])

    p = f64(pieces(params, jnp.asarray(u, jnp.float32), jnp.asarray(cond, jnp.float32)))
    means, logvars = p["components"]
    np.testing.assert_allclose(p["log_prior"], vamp_log_prior(np.asarray(z, np.float64), means, logvars), rtol=1e-5)
    # The pseudo-inputs' conditions matter: with the condition zeroed the components move.
    assert np.max(np.abs(p["zeroed"][0] - means)) > 0.05
    # Samples: one prior draw decoded under two conditions differs.
    assert np.max(np.abs(p["images"][0] - p["images"][1])) > 1e-3


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="vamp", vamp_components=5)
    assert model.vamp_components == 5 and np.isfinite(final["test_nelbo"]) and np.isfinite(final["test_bpd"])


def test_trains_two_steps_and_upscales_conditioned_on_x_low(tfds_dir, tmp_path):
    """--condition lowres (x_low 7x7): trained, reloaded, and 4 samples drawn for 4 given x_low."""
    x_low = jnp.asarray(np.random.default_rng(25).random((4, 7, 7, 1)), jnp.float32)
    final, model, images = train_two_steps_and_sample(tfds_dir, str(tmp_path), given=x_low, model="vamp",
                                                      vamp_components=5, condition="lowres")
    assert model.conditioning.kind == "lowres" and np.isfinite(final["test_nelbo"]) and np.isfinite(images).all()
