"""jaxae.distributions: the Gaussian log-densities and the one closed-form KL every model uses
(``gaussian_kl``, elementwise), checked against independent numpy formulas and Monte Carlo."""

import math

import jax.numpy as jnp
import numpy as np

from jaxae import distributions as dist


def np_kl(q_mean, q_logvar, p_mean, p_logvar):
    """KL(N(q_mean, q_var) || N(p_mean, p_var)) per element in float64, written with standard
    deviations: log(sp / sq) + (sq^2 + (mq - mp)^2) / (2 sp^2) - 1/2."""
    q_mean, q_logvar, p_mean, p_logvar = (np.asarray(a, np.float64) for a in (q_mean, q_logvar, p_mean, p_logvar))
    sq, sp = np.exp(0.5 * q_logvar), np.exp(0.5 * p_logvar)
    return np.log(sp / sq) + (sq**2 + (q_mean - p_mean) ** 2) / (2 * sp**2) - 0.5


Q_MEAN = np.array([0.5, -1.0, 2.0, 0.0])
Q_LOGVAR = np.array([-0.3, 0.4, -1.2, 0.9])
P_MEAN = np.array([-0.7, 0.2, 1.5, 0.4])
P_LOGVAR = np.array([0.6, -0.5, 0.3, -0.8])


def test_gaussian_kl_is_elementwise_and_matches_numpy_with_a_standard_prior():
    kl = dist.gaussian_kl(jnp.asarray(Q_MEAN, jnp.float32), jnp.asarray(Q_LOGVAR, jnp.float32))
    assert kl.shape == (4,)                                            # Nothing is reduced.
    np.testing.assert_allclose(kl, np_kl(Q_MEAN, Q_LOGVAR, 0.0, 0.0), rtol=1e-6)
    # By hand for the first element: 0.5 * (e^-0.3 + 0.25 - 1 + 0.3).
    np.testing.assert_allclose(float(kl[0]), 0.5 * (math.exp(-0.3) + 0.25 - 1.0 + 0.3), rtol=1e-6)
    # The default prior is N(0, 1): the same numbers as passing it explicitly as arrays.
    np.testing.assert_allclose(kl, dist.gaussian_kl(Q_MEAN, Q_LOGVAR, jnp.zeros(4), jnp.zeros(4)), rtol=1e-6)


def test_gaussian_kl_with_a_non_standard_prior_matches_numpy():
    kl = dist.gaussian_kl(jnp.asarray(Q_MEAN, jnp.float32), jnp.asarray(Q_LOGVAR, jnp.float32),
                          jnp.asarray(P_MEAN, jnp.float32), jnp.asarray(P_LOGVAR, jnp.float32))
    expected = np_kl(Q_MEAN, Q_LOGVAR, P_MEAN, P_LOGVAR)
    assert np.all(expected > 0.05)                                     # Every element's terms matter.
    np.testing.assert_allclose(kl, expected, rtol=1e-6)
    # Element 1 by hand: log(sp/sq) = (-0.5 - 0.4)/2, (e^0.4 + 1.2^2) / (2 e^-0.5) - 1/2.
    hand = -0.45 + (math.exp(0.4) + 1.44) / (2 * math.exp(-0.5)) - 0.5
    np.testing.assert_allclose(float(kl[1]), hand, rtol=1e-6)
    # Scalar prior parameters broadcast: a float mean and log-variance shift every element.
    np.testing.assert_allclose(dist.gaussian_kl(Q_MEAN, Q_LOGVAR, 0.3, -0.2), np_kl(Q_MEAN, Q_LOGVAR, 0.3, -0.2),
                               rtol=1e-6)
    # Broadcasting over a batch axis: (3, 4) posteriors against one (4,) prior.
    batch_mean = np.stack([Q_MEAN, Q_MEAN + 1.0, -Q_MEAN])
    np.testing.assert_allclose(dist.gaussian_kl(batch_mean, Q_LOGVAR, P_MEAN, P_LOGVAR),
                               np_kl(batch_mean, Q_LOGVAR, P_MEAN, P_LOGVAR), rtol=1e-6)


def test_gaussian_kl_is_zero_only_when_q_equals_p():
    np.testing.assert_array_equal(dist.gaussian_kl(jnp.zeros(5), jnp.zeros(5)), 0.0)
    np.testing.assert_allclose(dist.gaussian_kl(P_MEAN, P_LOGVAR, P_MEAN, P_LOGVAR), 0.0, atol=1e-7)
    # Moving the mean alone: (dm)^2 / (2 p_var); the variance alone: 0.5 (r - 1 - log r), r = q_var / p_var.
    np.testing.assert_allclose(dist.gaussian_kl(P_MEAN + 0.1, P_LOGVAR, P_MEAN, P_LOGVAR),
                               0.01 / (2 * np.exp(P_LOGVAR)), rtol=1e-4)
    np.testing.assert_allclose(dist.gaussian_kl(P_MEAN, P_LOGVAR + 0.5, P_MEAN, P_LOGVAR),
                               np.full(4, 0.5 * (math.exp(0.5) - 1.0 - 0.5)), rtol=1e-5)


def _monte_carlo_kl(q_mean, q_logvar, p_mean, p_logvar, n, seed):
    """E_q[log q(z) - log p(z)] per element from n draws, and its standard error."""
    eps = np.random.default_rng(seed).standard_normal((n, len(q_mean)))
    z = q_mean + np.exp(0.5 * q_logvar) * eps
    # Elementwise densities: the library's (..., D) -> (...) log-density with D = 1.
    lq = np.asarray(dist.diag_gaussian_log_prob(jnp.asarray(z[..., None]), q_mean[:, None], q_logvar[:, None]))
    lp = np.asarray(dist.diag_gaussian_log_prob(jnp.asarray(z[..., None]), p_mean[:, None], p_logvar[:, None]))
    diff = (lq - lp).astype(np.float64)
    return diff.mean(0), diff.std(0) / math.sqrt(n)


def test_gaussian_kl_matches_monte_carlo_with_standard_and_learned_priors():
    for p_mean, p_logvar in ((np.zeros(4), np.zeros(4)), (P_MEAN, P_LOGVAR)):
        mc, se = _monte_carlo_kl(Q_MEAN, Q_LOGVAR, p_mean, p_logvar, 200_000, seed=0)
        exact = dist.gaussian_kl(Q_MEAN, Q_LOGVAR, p_mean, p_logvar)
        assert np.all(se < 0.01), se
        np.testing.assert_allclose(mc, exact, atol=float(4 * se.max()))


def test_gaussian_log_prob_by_hand():
    x, mean, logvar = jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]), jnp.array([0.0, np.log(4.0)])
    hand = -0.5 * (np.log(2 * np.pi) + 1.0) - 0.5 * (np.log(2 * np.pi) + np.log(4.0))
    np.testing.assert_allclose(dist.diag_gaussian_log_prob(x, mean, logvar), hand, rtol=1e-6)
    np.testing.assert_allclose(dist.standard_normal_log_prob(x), -np.log(2 * np.pi) - 0.5, rtol=1e-6)
    # A non-zero mean and both variances in play, reduced over the last axis only: (2, 2) -> (2,).
    xs = jnp.array([[1.0, -2.0], [0.5, 0.5]])
    got = dist.diag_gaussian_log_prob(xs, jnp.array([0.3, -1.0]), jnp.array([0.2, -0.7]))
    hand = [sum(-0.5 * (math.log(2 * math.pi) + v + (a - m) ** 2 * math.exp(-v))
                for a, m, v in zip(row, (0.3, -1.0), (0.2, -0.7))) for row in ((1.0, -2.0), (0.5, 0.5))]
    np.testing.assert_allclose(got, hand, rtol=1e-6)
