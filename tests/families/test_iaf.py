"""The IAF VAE (jaxae.families.iaf, jaxae.nets.iaf): the MADE masks make every step
autoregressive (jax.jacobian), the flow's log-determinant is the numerical log|det J| of
eps -> z_T, log q(z_T|x) and the IWAE log-weights match a numpy reference of encoder,
MADEs and flow, and with no steps the family is the VAE."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_like
from family_helpers import BINARY, binary_images, f64, random_params, train_two_steps_and_sample

from jaxae import inputs
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.iaf import IAF, IAFNet
from jaxae.nets.iaf import MADE

D, HIDDEN = 4, 6
TINY = dict(model="iaf", hidden_dims=(16,), latent_dim=D, iaf_steps=3, iaf_hidden=HIDDEN)
LOG_2PI = math.log(2 * math.pi)


def numpy_made(p, z, h):
    """numpy MADE with degrees by hand: input d has degree d (1-based), hidden unit k degree
    1 + k mod (D - 1); hidden sees degrees <= its own, output d degrees < d."""
    dim = z.shape[-1]
    deg_in = np.arange(1, dim + 1)
    deg_hidden = 1 + np.arange(HIDDEN) % (dim - 1)
    m1 = deg_hidden[None, :] >= deg_in[:, None]
    m2 = deg_hidden[None, :] >= deg_hidden[:, None]
    m3 = np.tile(deg_in[None, :] > deg_hidden[:, None], (1, 2))
    elu = lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0)))  # noqa: E731
    a = elu(z @ (p["MaskedDense_0"]["kernel"] * m1) + p["MaskedDense_0"]["bias"] + h @ p["Dense_0"]["kernel"])
    a = elu(a @ (p["MaskedDense_1"]["kernel"] * m2) + p["MaskedDense_1"]["bias"])
    out = a @ (p["MaskedDense_2"]["kernel"] * m3) + p["MaskedDense_2"]["bias"]
    return out[..., :dim], out[..., dim:]


def numpy_posterior(params, x, eps, steps):
    """numpy q(z|x) of the IAF VAE for eps (B, S, D): (z_T, log q(z_T|x)); the encoder is the
    MLP (relu, one hidden layer) whose 4 D outputs are z0's mean, h's first half, z0's
    logvar, h's second half."""
    e = params["encoder"]
    a = np.maximum(x.reshape(len(x), -1) @ e["Dense_0"]["kernel"] + e["Dense_0"]["bias"], 0)
    stats = a @ e["Dense_1"]["kernel"] + e["Dense_1"]["bias"]
    mean_all, logvar_all = stats[:, :2 * D], stats[:, 2 * D:]
    mean, logvar = mean_all[:, None, :D], logvar_all[:, None, :D]
    h = np.concatenate([mean_all[:, D:], logvar_all[:, D:]], axis=-1)[:, None]
    z = mean + np.exp(0.5 * logvar) * eps
    log_q = -0.5 * np.sum(LOG_2PI + eps**2 + logvar, axis=-1)
    for t in range(steps):
        if t:
            z = z[..., ::-1]
        m, s = numpy_made(params["flow"][f"step_{t}"], z, h)
        sigma = 1 / (1 + np.exp(-(s + 1.0)))
        z = sigma * z + (1 - sigma) * m
        log_q = log_q - np.sum(np.log(sigma), axis=-1)
    return z, log_q


def eps_of_log_weights(keys, num_samples):
    """The noise log_weights draws: sample s from fold_in(fold_in(fold(key, MODEL_FOLD), s), 0)."""
    model_keys = inputs.fold(keys, inputs.MODEL_FOLD)
    return jax.vmap(lambda k: jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, s), 0),
                                                                   (D,)))(jnp.arange(num_samples)))(model_keys)


@functools.partial(jax.jit, static_argnums=(0, 4))
def pieces(model, params, x, keys, num_samples):
    eps_s = eps_of_log_weights(keys, num_samples)
    eps = model.noise(keys)
    post = lambda e: model.net.apply({"params": params}, x, e, method=IAFNet.posterior)  # noqa: E731
    z_s, log_q_s, _ = post(eps_s)
    z, _, code = post(eps)
    decode = lambda v: model.net.apply({"params": params}, v, method=IAFNet.decode)  # noqa: E731
    log_px_s = model.likelihood.log_prob(decode(z_s.reshape(-1, D)).reshape(*z_s.shape[:2], *x.shape[1:]), x[:, None])
    batch = {"x": x, "x_in": x}
    return dict(code=code, encoded=model.encode(params, x)[0], eps=eps, eps_s=eps_s, z_s=z_s, log_q_s=log_q_s,
                log_px_s=log_px_s, z=z,
                log_px=model.likelihood.log_prob(decode(z), x), log_w=model.log_weights(params, x, keys, num_samples),
                loss=model.loss(params, batch, keys), terms=model.eval_terms(params, batch, keys))


@pytest.fixture(scope="module")
def case():
    model = make_model(Config.create(**TINY), BINARY)
    params = random_params(model, seed=21, scale=1.0)
    x, keys = binary_images(3, seed=22), inputs.example_keys(jax.random.key(23), 3)
    return model, params, x, keys, f64(pieces(model, params, x, keys, 5))


def test_made_is_autoregressive():
    """d(m, s)_i / dz_j = 0 for j >= i, and not all zero below the diagonal, at random params."""
    made = MADE(5, (7, 7))
    z, h = jnp.asarray(np.random.default_rng(0).normal(size=5), jnp.float32), jnp.ones(3)
    params = random_like(jax.eval_shape(made.init, jax.random.key(0), z, h)["params"], seed=3, scale=1.0)
    jac_m, jac_s = jax.jacobian(lambda v: made.apply({"params": params}, v, h))(z)
    for jac in (np.asarray(jac_m), np.asarray(jac_s)):
        assert np.all(np.triu(jac) == 0)
        assert np.all(np.abs(np.tril(jac, -1))[np.tril_indices(5, -1)] > 1e-6)


def test_log_det_is_the_numerical_log_det_of_the_whole_flow(case):
    """log q(z_T|x) = log N(eps) - log|det dz_T/deps| with J from jax.jacobian and slogdet."""
    model, params, x, _, p = case
    eps = jnp.asarray(p["eps"][:1], jnp.float32)
    to_z = lambda e: model.net.apply({"params": params}, x[:1], e[None], method=IAFNet.posterior)[0][0]  # noqa: E731
    jac = np.asarray(jax.jit(jax.jacobian(to_z))(eps[0]), np.float64)
    sign, log_abs_det = np.linalg.slogdet(jac)
    _, log_q, _ = model.net.apply({"params": params}, x[:1], eps, method=IAFNet.posterior)
    expected = -0.5 * np.sum(LOG_2PI + p["eps"][0] ** 2) - log_abs_det
    assert sign != 0 and np.max(np.abs(np.triu(jac, 1))) > 1e-3  # The reversals make J full, not triangular.
    np.testing.assert_allclose(float(log_q[0]), expected, rtol=1e-4)


def test_log_q_and_log_weights_match_numpy(case):
    model, params, x, _, p = case
    z, log_q = numpy_posterior(f64(params), np.asarray(x, np.float64), p["eps_s"], steps=3)
    np.testing.assert_allclose(p["z_s"], z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p["log_q_s"], log_q, rtol=1e-5, atol=1e-4)
    log_prior = -0.5 * np.sum(LOG_2PI + z**2, axis=-1)
    np.testing.assert_allclose(p["log_w"], p["log_px_s"] + log_prior - log_q, rtol=1e-5, atol=1e-4)


def test_loss_is_the_negative_elbo_with_a_monte_carlo_kl(case):
    model, params, x, _, p = case
    z, log_q = numpy_posterior(f64(params), np.asarray(x, np.float64), p["eps"][:, None], steps=3)
    kl = log_q[:, 0] + 0.5 * np.sum(LOG_2PI + z[:, 0] ** 2, axis=-1)
    (loss, scalars), terms = p["loss"], p["terms"]
    np.testing.assert_allclose(terms["nelbo"], -p["log_px"] + kl, rtol=1e-5)
    np.testing.assert_allclose([loss, scalars["kl"]], [np.mean(-p["log_px"] + kl), kl.mean()], rtol=1e-5)
    assert terms["kl_per_unit"].shape == (3, 1)
    # The code is the flow's image of z0's mean: z_T at eps = 0.
    z0, _ = numpy_posterior(f64(params), np.asarray(x, np.float64), np.zeros((3, 1, D)), steps=3)
    np.testing.assert_allclose([p["code"], p["encoded"]], [z0[:, 0], z0[:, 0]], rtol=1e-4, atol=1e-5)


def test_without_steps_it_is_the_vae():
    """T = 0: the vae's parameters, the same reconstruction term and IWAE log-weights, and a
    Monte Carlo KL whose mean over many draws is the vae's closed-form KL."""
    iaf = make_model(Config.create(**dict(TINY, iaf_steps=0)), BINARY)
    vae = make_model(Config.create(model="vae", hidden_dims=(16,), latent_dim=D), BINARY)
    params = random_params(vae, seed=24, scale=0.7)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(iaf.init, jax.random.key(0)))
    n = 500
    x = jnp.broadcast_to(binary_images(1, seed=25), (n, *BINARY.image_shape))
    keys = inputs.example_keys(jax.random.key(26), n)
    batch = {"x": x, "x_in": x}
    got, want = f64(jax.jit(iaf.eval_terms)(params, batch, keys)), f64(jax.jit(vae.eval_terms)(params, batch, keys))
    np.testing.assert_allclose(got["recon"], want["recon"], rtol=1e-6)
    assert np.std(got["kl"]) > 0.1
    assert abs(got["kl"].mean() - want["kl"][0]) < 4 * np.std(got["kl"]) / np.sqrt(n)
    log_weights = lambda model: jax.jit(model.log_weights, static_argnums=3)(params, x[:2], keys[:2], 4)  # noqa: E731
    np.testing.assert_allclose(log_weights(iaf), log_weights(vae), rtol=1e-6)


def test_inference_mask_holds_encoder_and_flow(case):
    model, params, *_ = case
    mask = model.inference_mask(params)
    assert all(jax.tree.leaves(mask["flow"])) and all(jax.tree.leaves(mask["encoder"]))
    assert not any(jax.tree.leaves(mask["decoder"]))


def test_iaf_config_rules():
    with pytest.raises(ConfigError, match="^--iaf_steps must be >= 0 \\(0: no flow\\), got -1$"):
        validate(Config.create(**dict(TINY, iaf_steps=-1)))
    with pytest.raises(ConfigError, match="^--iaf_hidden must be > 0, got 0$"):
        validate(Config.create(**dict(TINY, iaf_hidden=0)))
    with pytest.raises(ConfigError, match="one stochastic layer"):
        make_model(Config.create(stochastic_layers=2, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--iaf_steps 3 is not used by --model vae"):
        make_model(Config.create(**dict(TINY, model="vae")), BINARY)
    model = make_model(Config.create(model="iaf"), BINARY)
    assert isinstance(model, IAF) and (model.iaf_steps, model.iaf_hidden) == (2, 128)


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="iaf", iaf_hidden=8)
    assert model.iaf_steps == 2 and np.isfinite(final["test_nelbo"]) and np.isfinite(final["test_bpd"])
