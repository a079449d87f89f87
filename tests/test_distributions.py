import jax
import jax.numpy as jnp
import numpy as np

from jaxae import distributions as dist


def test_kl_closed_form_matches_monte_carlo():
    mean = jnp.array([0.5, -1.0, 2.0])
    logvar = jnp.array([-0.3, 0.4, -1.2])
    z = jax.vmap(dist.sample_diag_gaussian, (0, None, None))(
        jax.random.split(jax.random.key(0), 200_000), mean, logvar)
    mc = jnp.mean(dist.diag_gaussian_log_prob(z, mean, logvar) - dist.standard_normal_log_prob(z))
    exact = dist.kl_diag_gaussian_standard_normal(mean, logvar)
    # Monte-Carlo standard error here is about 0.006 nats.
    np.testing.assert_allclose(mc, exact, atol=0.03)
    hand = 0.5 * sum(np.exp(v) + m * m - 1 - v for m, v in zip(mean.tolist(), logvar.tolist()))
    np.testing.assert_allclose(exact, hand, rtol=1e-6)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    assert float(dist.kl_diag_gaussian_standard_normal(jnp.zeros(5), jnp.zeros(5))) == 0.0
    assert float(dist.kl_diag_gaussian_standard_normal(jnp.full(5, 0.1), jnp.zeros(5))) > 0.0


def test_gaussian_log_prob_by_hand():
    x, mean, logvar = jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]), jnp.array([0.0, np.log(4.0)])
    hand = -0.5 * (np.log(2 * np.pi) + 1.0) - 0.5 * (np.log(2 * np.pi) + np.log(4.0))
    np.testing.assert_allclose(dist.diag_gaussian_log_prob(x, mean, logvar), hand, rtol=1e-6)
    np.testing.assert_allclose(dist.standard_normal_log_prob(x), -np.log(2 * np.pi) - 0.5, rtol=1e-6)
