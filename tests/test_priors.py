"""Densities fitted to the codes (jaxae.priors): fitting, sampling, and prior.npz."""

import os

import jax
import numpy as np
import pytest

from jaxae import priors
from jaxae.errors import ConfigError


def test_fitted_gaussian_recovers_mean_and_covariance(tmp_path):
    rng = np.random.default_rng(0)
    mean = np.array([1.0, -2.0, 0.5])
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    codes = rng.multivariate_normal(mean, cov, size=50_000)
    prior = priors.fit(codes)
    assert prior.num_components == 1 and prior.weights.tolist() == [1.0]
    # Exactly the sample mean and covariance (plus the jitter), as a Cholesky factor.
    np.testing.assert_allclose(prior.means[0], codes.mean(0), rtol=1e-12)
    np.testing.assert_allclose(prior.chols[0] @ prior.chols[0].T, np.cov(codes, rowvar=False) + 1e-5 * np.eye(3),
                               rtol=1e-12)
    assert np.allclose(np.triu(prior.chols[0], 1), 0)
    np.testing.assert_allclose(prior.means[0], mean, atol=0.03)
    np.testing.assert_allclose(prior.chols[0] @ prior.chols[0].T, cov, atol=0.05)
    priors.save(str(tmp_path), prior)
    assert sorted(os.listdir(tmp_path)) == [priors.PRIOR_FILE]  # No temporary file left behind.
    loaded = priors.load(str(tmp_path))
    for name in ("weights", "means", "chols"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(prior, name))
    draws = np.asarray(priors.sample(loaded, jax.random.key(0), 50_000))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), cov, atol=0.05)
    hot = np.asarray(priors.sample(loaded, jax.random.key(0), 50_000, temperature=0.5))
    np.testing.assert_allclose(np.cov(hot, rowvar=False), 0.25 * cov, atol=0.02)


def test_sample_is_mean_plus_temperature_times_cholesky_noise():
    """Hand-computed: one component, L = [[2, 0], [1, 3]], so a draw is mean + T * L eps."""
    prior = priors.FittedPrior(np.ones(1), np.array([[1.0, -1.0]]), np.array([[[2.0, 0.0], [1.0, 3.0]]]))
    rng = jax.random.key(7)
    eps = np.asarray(jax.random.normal(jax.random.split(rng)[1], (4, 2)))
    for temperature in (1.0, 0.5):
        expected = np.array([1.0, -1.0]) + temperature * np.stack([2 * eps[:, 0], eps[:, 0] + 3 * eps[:, 1]], -1)
        np.testing.assert_allclose(priors.sample(prior, rng, 4, temperature), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(priors.sample(prior, rng, 3, 0.0), [[1.0, -1.0]] * 3)


def test_fitted_mixture_recovers_two_clusters():
    rng = np.random.default_rng(1)
    codes = np.concatenate([rng.normal(-5, 1, (3000, 2)), rng.normal(5, 0.5, (1000, 2))])
    prior = priors.fit(codes, num_components=2, seed=0)
    assert prior.num_components == 2 and prior.chols.shape == (2, 2, 2)
    order = np.argsort(prior.means[:, 0])
    np.testing.assert_allclose(prior.weights[order], [0.75, 0.25], atol=0.02)
    np.testing.assert_allclose(prior.means[order], [[-5, -5], [5, 5]], atol=0.1)
    draws = np.asarray(priors.sample(prior, jax.random.key(0), 20_000))
    assert abs((draws[:, 0] > 0).mean() - 0.25) < 0.02


def test_missing_prior_is_none(tmp_path):
    assert priors.load(str(tmp_path)) is None


@pytest.mark.parametrize("arrays,message", [
    (None, "is not a readable .npz of plain arrays"),
    ({"weights": np.ones(1), "means": np.zeros((1, 2))}, "lacks weights, means and chols"),
    ({"weights": np.array([0.5, 0.6]), "means": np.zeros((2, 2)), "chols": np.zeros((2, 2, 2))}, "is malformed"),
    ({"weights": np.ones(1), "means": np.zeros((1, 2)), "chols": np.zeros((1, 3, 3))}, "is malformed"),
    ({"weights": np.ones(1), "means": np.full((1, 2), np.nan), "chols": np.zeros((1, 2, 2))}, "is malformed"),
    ({"weights": np.ones(1), "means": np.zeros((1, 2)), "chols": np.array([{}], dtype=object)},
     "is not a readable .npz of plain arrays"),
])
def test_malformed_prior_file_is_a_one_line_error(tmp_path, arrays, message):
    path = tmp_path / priors.PRIOR_FILE
    if arrays is None:
        path.write_bytes(b"garbage")
    else:
        np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=f"^fitted prior '{path}' {message}") as error:
        priors.load(str(tmp_path))
    assert "\n" not in str(error.value)
