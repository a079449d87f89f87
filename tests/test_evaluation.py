import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import evaluation
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.likelihoods import Gaussian
from jaxae.models import AutoencoderModel, AutoencoderNet, make_model
from jaxae.nets import MLPDecoder, MLPEncoder
from jaxae.objectives import ObjectiveSettings

SIGMA = 0.5


def _linear_gaussian():
    """z ~ N(0, I_2), x | z ~ N(z W + b, SIGMA^2 I_4): log p(x) = log N(x; b, W^T W + SIGMA^2 I).

    The exact posterior is N((x - b) W^T S / SIGMA^2, S) with S = (I + W W^T / SIGMA^2)^-1.
    The (linear) encoder proposes that mean with 2x its marginal variances and no
    correlation: a good but inexact q, so the IWAE gap is small, positive and shrinks with k.
    """
    spec = InputSpec(image_shape=(2, 2, 1), num_classes=0, mode="dequantize")
    model = AutoencoderModel(family="vae", net=AutoencoderNet(encoder=MLPEncoder((), 2),
                                                              decoder=MLPDecoder((), (2, 2, 1))),
                             likelihood=Gaussian(scale=SIGMA), spec=spec, latent_dim=2,
                             settings=ObjectiveSettings.from_config(Config()))
    w = jnp.array([[1.0, -0.5, 0.3, 0.8], [0.2, 0.9, -1.0, 0.4]])
    b = jnp.array([0.1, -0.2, 0.3, 0.0])
    post_cov = jnp.linalg.inv(jnp.eye(2) + w @ w.T / SIGMA**2)
    to_mean = w.T @ post_cov / SIGMA**2                                   # (4, 2)
    params = {
        "encoder": {"Dense_0": {"kernel": jnp.concatenate([to_mean, jnp.zeros((4, 2))], axis=1),
                                "bias": jnp.concatenate([-b @ to_mean, jnp.log(2.0 * jnp.diag(post_cov))])}},
        "decoder": {"Dense_0": {"kernel": w, "bias": b}},
    }
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, model.init(jax.random.key(0)))
    x = jnp.array([[0.5, 0.1, -0.4, 1.0], [-1.0, 0.3, 0.9, 0.2], [0.1, -0.2, 0.3, 0.0]])
    cov = w.T @ w + SIGMA**2 * jnp.eye(4)
    diff = x - b
    exact = (-0.5 * (4 * math.log(2 * math.pi) + jnp.linalg.slogdet(cov)[1]
                     + jnp.einsum("bi,ij,bj->b", diff, jnp.linalg.inv(cov), diff)) - 4 * math.log(256))
    return model, params, x.reshape(3, 2, 2, 1), exact


def test_iwae_converges_to_the_exact_log_likelihood_from_below():
    model, params, x, exact = _linear_gaussian()
    keys = jax.random.split(jax.random.key(1), 3)
    # E[IWAE_k] for k = 1 .. 1000, each averaged over 200,000 / k independent estimates.
    log_w = model.log_importance_weights(params, x, keys, 200_000)
    gaps = {k: np.asarray(exact - jnp.mean(jax.nn.logsumexp(log_w.reshape(3, -1, k), axis=-1) - math.log(k), 1))
            for k in (1, 10, 100, 1000)}
    # A lower bound whose gap, KL(q || p(z|x)) at k = 1, shrinks monotonically with k ...
    assert np.all(gaps[1] > 0.05), gaps
    assert np.all(gaps[1] > gaps[10]) and np.all(gaps[10] > gaps[100]) and np.all(gaps[100] > gaps[1000]), gaps
    # ... and the chunked k = 5000 estimator equals log p(x) up to Monte-Carlo noise.
    reps = [evaluation.iwae_log_likelihood(model, params, x, jax.vmap(jax.random.fold_in, (0, None))(keys, r),
                                           5000, 500) for r in range(10)]
    estimate = np.mean(np.stack(reps), axis=0)
    noise = np.std(np.stack(reps), axis=0) / np.sqrt(len(reps))
    assert np.all(noise < 1e-2), noise
    assert np.all(np.abs(estimate - exact) < 4 * noise + 1e-4), (estimate, exact, noise)
    assert np.all(gaps[1000] > -4 * noise)


def test_chunked_iwae_equals_one_log_sum_exp_and_the_elbo_is_below():
    model, params, x, exact = _linear_gaussian()
    keys = jax.random.split(jax.random.key(2), 3)
    chunked = evaluation.iwae_log_likelihood(model, params, x, keys, 20000, 2000)
    log_w = model.log_importance_weights(params, x, keys, 20000)
    np.testing.assert_allclose(jax.nn.logsumexp(log_w, axis=1) - math.log(20000), chunked, rtol=1e-6)
    np.testing.assert_allclose(log_w[:, 2000:2500], model.log_importance_weights(params, x, keys, 500, 2000),
                               rtol=1e-6)
    # E[log w] is the ELBO, below log p(x).
    elbo = jnp.mean(log_w, axis=1)
    assert np.all(elbo < exact)


@pytest.fixture(scope="module")
def small_model():
    spec = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")
    model = make_model(Config(hidden_dims=(32,), latent_dim=6), spec)
    return model, model.init(jax.random.key(0))


def test_evaluate_full_reports_consistent_numbers(small_model, mnist5k):
    model, params = small_model
    images = mnist5k[2].images[:60]
    a = evaluation.evaluate_full(model, params, images, jax.random.key(3), iwae_samples=50, batch_size=20, chunk=25)
    b = evaluation.evaluate_full(model, params, images, jax.random.key(3), iwae_samples=50, batch_size=30, chunk=10)
    for name in ("nelbo", "nll_iwae", "mse", "kl", "active_units"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5)
    assert a["nll_iwae"] < a["nelbo"]
    assert a["bpd_iwae"] == pytest.approx(a["nll_iwae"] / (784 * math.log(2)))
    assert len(a["kl_per_dim"]) == 6 and sum(a["kl_per_dim"]) == pytest.approx(a["kl"], rel=1e-5)
    assert 0 <= a["active_units"] <= 6
    fast = evaluation.evaluate(model, params, images, jax.random.key(3), batch_size=7)
    np.testing.assert_allclose(fast["nelbo"], a["nelbo"], rtol=1e-5)


def test_largest_divisor():
    assert evaluation.largest_divisor_at_most(5000, 500) == 500
    assert evaluation.largest_divisor_at_most(5000, 300) == 250
    assert evaluation.largest_divisor_at_most(7, 5) == 1
