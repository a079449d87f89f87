import jax
import numpy as np

from jaxae import priors


def test_fitted_gaussian_recovers_mean_and_covariance(tmp_path):
    rng = np.random.default_rng(0)
    mean = np.array([1.0, -2.0, 0.5])
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    codes = rng.multivariate_normal(mean, cov, size=50_000)
    prior = priors.fit(codes)
    assert prior.num_components == 1
    np.testing.assert_allclose(prior.means[0], mean, atol=0.03)
    np.testing.assert_allclose(prior.chols[0] @ prior.chols[0].T, cov, atol=0.05)
    priors.save(str(tmp_path), prior)
    loaded = priors.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.chols, prior.chols)
    draws = np.asarray(priors.sample(loaded, jax.random.key(0), 50_000))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), cov, atol=0.05)
    hot = np.asarray(priors.sample(loaded, jax.random.key(0), 50_000, temperature=0.5))
    np.testing.assert_allclose(np.cov(hot, rowvar=False), 0.25 * cov, atol=0.02)


def test_fitted_mixture_recovers_two_clusters():
    rng = np.random.default_rng(1)
    codes = np.concatenate([rng.normal(-5, 1, (3000, 2)), rng.normal(5, 0.5, (1000, 2))])
    prior = priors.fit(codes, num_components=2, seed=0)
    order = np.argsort(prior.means[:, 0])
    np.testing.assert_allclose(prior.weights[order], [0.75, 0.25], atol=0.02)
    np.testing.assert_allclose(prior.means[order], [[-5, -5], [5, 5]], atol=0.1)
    draws = np.asarray(priors.sample(prior, jax.random.key(0), 20_000))
    assert abs((draws[:, 0] > 0).mean() - 0.25) < 0.02


def test_missing_prior_is_none(tmp_path):
    assert priors.load(str(tmp_path)) is None
