import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from conftest import random_like
from jaxae import evaluation, inputs
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families import make_model
from jaxae.families.vae import VAE
from jaxae.likelihoods import Gaussian
from jaxae.nets import MLPDecoder, MLPEncoder, OneLayerNet

SIGMA = 0.5


@functools.partial(jax.jit, static_argnums=(0, 4))
def log_weights(model, params, x, keys, num_samples, start=0):
    return model.log_weights(params, x, keys, num_samples, start)


def _linear_gaussian():
    """z ~ N(0, I_2), x | z ~ N(z W + b, SIGMA^2 I_4): log p(x) = log N(x; b, W^T W + SIGMA^2 I).

    The exact posterior is N((x - b) W^T S / SIGMA^2, S) with S = (I + W W^T / SIGMA^2)^-1.
    The (linear) encoder proposes that mean with 2x its marginal variances and no
    correlation: a good but inexact q, so the IWAE gap is small, positive and shrinks with k.
    """
    spec = InputSpec(image_shape=(2, 2, 1), num_classes=0, mode="dequantize")
    model = VAE(net=OneLayerNet(encoder=MLPEncoder((), 2), decoder=MLPDecoder((), (2, 2, 1))),
                likelihood=Gaussian(scale=SIGMA), spec=spec, latent_dim=2, noise_dim=2)
    w = np.array([[1.0, -0.5, 0.3, 0.8], [0.2, 0.9, -1.0, 0.4]])
    b = np.array([0.1, -0.2, 0.3, 0.0])
    post_cov = np.linalg.inv(np.eye(2) + w @ w.T / SIGMA**2)
    to_mean = w.T @ post_cov / SIGMA**2                                   # (4, 2)
    params = {
        "encoder": {"Dense_0": {"kernel": np.concatenate([to_mean, np.zeros((4, 2))], axis=1),
                                "bias": np.concatenate([-b @ to_mean, np.log(2.0 * np.diag(post_cov))])}},
        "decoder": {"Dense_0": {"kernel": w, "bias": b}},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, jax.eval_shape(model.init, jax.random.key(0)))
    x = np.array([[0.5, 0.1, -0.4, 1.0], [-1.0, 0.3, 0.9, 0.2], [0.1, -0.2, 0.3, 0.0]])
    cov = w.T @ w + SIGMA**2 * np.eye(4)
    diff = x - b
    exact = (-0.5 * (4 * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1]
                     + np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)) - 4 * math.log(256))
    x = jnp.asarray(x, jnp.float32)
    return model, params, x.reshape(3, 2, 2, 1), exact


def test_iwae_converges_to_the_exact_log_likelihood_from_below():
    model, params, x, exact = _linear_gaussian()
    keys = jax.random.split(jax.random.key(1), 3)
    # E[IWAE_k] for k = 1 .. 1000, each averaged over 200,000 / k independent estimates.
    log_w = np.asarray(log_weights(model, params, x, keys, 200_000), np.float64)
    gaps = {k: exact - np.mean(scipy.special.logsumexp(log_w.reshape(3, -1, k), axis=-1) - math.log(k), 1)
            for k in (1, 10, 100, 1000)}
    # A lower bound whose gap, KL(q || p(z|x)) at k = 1, shrinks monotonically with k ...
    assert np.all(gaps[1] > 0.05), gaps
    assert np.all(gaps[1] > gaps[10]) and np.all(gaps[10] > gaps[100]) and np.all(gaps[100] > gaps[1000]), gaps
    # ... and the chunked k = 5000 estimator equals log p(x) up to Monte-Carlo noise.
    reps = [evaluation.iwae_log_likelihood(model, params, x, jax.vmap(jax.random.fold_in, (0, None))(keys, r),
                                           5000, 500) for r in range(10)]
    reps = np.asarray(np.stack(reps), np.float64)
    estimate = np.mean(reps, axis=0)
    noise = np.std(reps, axis=0) / np.sqrt(len(reps))
    assert np.all(noise < 1e-2), noise
    assert np.all(np.abs(estimate - exact) < 4 * noise + 1e-4), (estimate, exact, noise)
    assert np.all(gaps[1000] > -4 * noise)


def test_chunked_iwae_equals_one_log_sum_exp_and_the_elbo_is_below():
    model, params, x, exact = _linear_gaussian()
    keys = jax.random.split(jax.random.key(2), 3)
    chunked = evaluation.iwae_log_likelihood(model, params, x, keys, 20000, 2000)
    log_w = np.asarray(log_weights(model, params, x, keys, 20000), np.float64)
    np.testing.assert_allclose(scipy.special.logsumexp(log_w, axis=1) - math.log(20000), chunked, rtol=1e-6)
    np.testing.assert_allclose(log_w[:, 2000:2500], log_weights(model, params, x, keys, 500, 2000), rtol=1e-6)
    # E[log w] is the ELBO, below log p(x).
    elbo = np.mean(log_w, axis=1)
    assert np.all(elbo < exact - 0.05), (elbo, exact)
    assert np.all(chunked > elbo)


def random_params(model, seed: int, scale: float = 0.5):
    """Parameters of model.init's shapes (traced only) drawn from a seeded normal: kernels with
    std scale / sqrt(fan_in), biases with std scale (not the initialisation)."""
    return random_like(jax.eval_shape(model.init, jax.random.key(0)), seed, scale)


@functools.partial(jax.jit, static_argnums=0)
def per_image(model, params, images, rng):
    """By hand, what evaluation reports per image: image i's key is fold_in(rng, i), its model
    input the evaluation batch (no augmentation or corruption)."""
    keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(images.shape[0]))
    return model.eval_terms(params, inputs.Preprocessing(model.spec)({"image": images}, keys, train=False), keys)


def np_mlp(layers, h):
    """The MLP of Dense params ``layers`` (in order) on h, relu between layers, float64."""
    for i, layer in enumerate(layers):
        h = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        h = np.maximum(h, 0.0) if i < len(layers) - 1 else h
    return h


def test_evaluate_full_by_hand_and_independent_of_the_batch_size():
    """evaluate_full in batches of 20 with the IWAE samples in chunks of 25: the deterministic
    numbers (KL per unit, reconstruction error of the posterior mean, active units) by hand in
    numpy, the sampled ones as evaluate gives them in batches of 7 (the last one padded)."""
    spec = InputSpec(image_shape=(8, 8, 1), num_classes=0, mode="binary")
    model = make_model(Config.create(hidden_dims=(32,), latent_dim=6), spec)
    params = random_params(model, seed=2, scale=0.6)
    images = (np.random.default_rng(1).random((60, 8, 8, 1)) < 0.3).astype(np.uint8)
    a = evaluation.evaluate_full(model, params, images, jax.random.key(3), iwae_samples=50, batch_size=20, chunk=25)
    x = images.reshape(60, -1).astype(np.float64)
    stats = np_mlp([params["encoder"]["Dense_0"], params["encoder"]["Dense_1"]], x)
    mean, logvar = stats[:, :6], stats[:, 6:]
    kl_per_unit = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar)
    probs = 1 / (1 + np.exp(-np_mlp([params["decoder"]["Dense_0"], params["decoder"]["Dense_1"]], mean)))
    np.testing.assert_allclose(a["kl_per_unit"], kl_per_unit.mean(0), rtol=1e-5)
    np.testing.assert_allclose(a["kl"], kl_per_unit.sum(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(a["mse"], np.sum((probs - x) ** 2, 1).mean(), rtol=1e-5)
    variances = mean.var(0)
    assert np.all(np.abs(variances - evaluation.ACTIVE_UNIT_THRESHOLD) > 5e-4), variances   # None on the edge.
    assert a["active_units"] == int(np.sum(variances > evaluation.ACTIVE_UNIT_THRESHOLD))
    assert 0 < a["active_units"] < 6, variances
    np.testing.assert_allclose(a["nelbo"], a["recon"] + a["kl"], rtol=1e-6)
    assert a["nll_iwae"] < a["nelbo"] - 0.1
    assert a["bpd"] == pytest.approx(a["nelbo"] / (64 * math.log(2)))
    assert a["bpd_iwae"] == pytest.approx(a["nll_iwae"] / (64 * math.log(2)))
    assert a["num_images"] == 60 and a["iwae_samples"] == 50
    fast = evaluation.evaluate(model, params, images, jax.random.key(3), batch_size=7)
    for name in ("nelbo", "recon", "kl", "bpd"):
        np.testing.assert_allclose(fast[name], a[name], rtol=1e-5)


def test_evaluate_full_leaves_the_padding_of_the_last_batch_out_of_every_number():
    """60 images in batches of 50: the last batch holds 10 images and 40 rows of padding, which
    must count neither in the sums nor in the variance of the posterior means (active units)."""
    spec = InputSpec(image_shape=(8, 8, 1), num_classes=0, mode="binary")
    model = make_model(Config.create(hidden_dims=(32,), latent_dim=6), spec)
    params = random_params(model, seed=2, scale=0.6)
    images = (np.random.default_rng(1).random((60, 8, 8, 1)) < 0.3).astype(np.uint8)
    a = evaluation.evaluate_full(model, params, images, jax.random.key(3), iwae_samples=0, batch_size=50)
    x = images.reshape(60, -1).astype(np.float64)
    stats = np_mlp([params["encoder"]["Dense_0"], params["encoder"]["Dense_1"]], x)
    mean, logvar = stats[:, :6], stats[:, 6:]
    kl_per_unit = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar)
    probs = 1 / (1 + np.exp(-np_mlp([params["decoder"]["Dense_0"], params["decoder"]["Dense_1"]], mean)))
    np.testing.assert_allclose(a["kl_per_unit"], kl_per_unit.mean(0), rtol=1e-5)
    np.testing.assert_allclose(a["mse"], np.sum((probs - x) ** 2, 1).mean(), rtol=1e-5)
    variances = mean.var(0)
    assert np.all(np.abs(variances - evaluation.ACTIVE_UNIT_THRESHOLD) > 5e-4), variances   # None on the edge.
    # 5 of 6 here; with the 40 padded (all-zero) images' codes counted it would be 3.
    assert a["active_units"] == int(np.sum(variances > evaluation.ACTIVE_UNIT_THRESHOLD)) == 5
    assert a["num_images"] == 60 and "nll_iwae" not in a


def test_bits_per_dim_counts_height_width_and_channels():
    assert InputSpec((32, 32, 3), 10, "grey").num_dims == 3072
    assert InputSpec((28, 28, 1), 10, "binary").num_dims == 784
    assert evaluation.bits_per_dim(3072 * math.log(2) * 5.5, 3072) == pytest.approx(5.5, rel=1e-12)
    spec = InputSpec((8, 8, 3), 0, "grey")
    config = Config.create(hidden_dims=(8,), latent_dim=2, likelihood="logistic_mixture", num_mixtures=1,
                           binarize="none")
    model = make_model(config, spec)
    params = random_params(model, seed=0)
    images = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    metrics = evaluation.evaluate(model, params, images, jax.random.key(2), batch_size=4)   # the last batch padded
    terms = per_image(model, params, jnp.asarray(images), jax.random.key(2))
    nelbo = float(np.mean(np.asarray(terms["nelbo"], np.float64)))
    np.testing.assert_allclose(metrics["nelbo"], nelbo, rtol=1e-5)
    assert metrics["bpd"] == pytest.approx(metrics["nelbo"] / (8 * 8 * 3 * math.log(2)), rel=1e-12)
    assert 7.0 < metrics["bpd"] < 20.0, metrics   # Random bytes under an untrained model: above 8 bits/dim.


def test_largest_divisor():
    assert evaluation.largest_divisor_at_most(5000, 500) == 500
    assert evaluation.largest_divisor_at_most(5000, 300) == 250
    assert evaluation.largest_divisor_at_most(7, 5) == 1
