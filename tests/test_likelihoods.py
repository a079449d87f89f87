import math

import jax.numpy as jnp
import numpy as np

from jaxae.likelihoods import Bernoulli, Gaussian


def test_bernoulli_log_prob_by_hand():
    logits = jnp.array([0.0, 2.0, -1.0, 3.0]).reshape(1, 2, 2, 1)
    x = jnp.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    hand = math.log(0.5) + math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(3.0))
    np.testing.assert_allclose(Bernoulli().log_prob(logits, x), [hand], rtol=1e-6)
    np.testing.assert_allclose(Bernoulli(binary_targets=False).log_prob(logits, x), [hand], rtol=1e-6)
    np.testing.assert_allclose(Bernoulli().mean(jnp.zeros((1, 2, 2, 1))), 0.5)


def test_bernoulli_soft_targets_are_the_cross_entropy():
    logits = jnp.array([0.5, -2.0, 4.0, -0.3]).reshape(1, 2, 2, 1)
    x = jnp.array([0.2, 0.9, 0.5, 0.0]).reshape(1, 2, 2, 1)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    hand = sum(t * math.log(sig(v)) + (1 - t) * math.log(1 - sig(v))
               for v, t in zip([0.5, -2.0, 4.0, -0.3], [0.2, 0.9, 0.5, 0.0]))
    np.testing.assert_allclose(Bernoulli(binary_targets=False).log_prob(logits, x), [hand], rtol=1e-6)


def test_gaussian_fixed_scale_is_a_log_likelihood_of_8bit_data():
    mean = jnp.full((1, 1, 1, 2), 0.5)
    x = jnp.array([0.5, 0.6]).reshape(1, 1, 1, 2)
    s = 0.1
    density = sum(-0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * ((v - 0.5) / s) ** 2 for v in (0.5, 0.6))
    hand = density - 2 * math.log(256)
    np.testing.assert_allclose(Gaussian(scale=s).log_prob(mean, x), [hand], rtol=1e-5)
    assert Gaussian(scale=s).params_per_channel == 1


def test_gaussian_learned_scale_uses_second_half_as_log_scale():
    out = jnp.concatenate([jnp.full((1, 1, 1, 1), 0.2), jnp.full((1, 1, 1, 1), math.log(0.5))], axis=-1)
    x = jnp.full((1, 1, 1, 1), 0.7)
    hand = -0.5 * math.log(2 * math.pi) - math.log(0.5) - 0.5 * (0.5 / 0.5) ** 2 - math.log(256)
    np.testing.assert_allclose(Gaussian().log_prob(out, x), [hand], rtol=1e-5)
    assert Gaussian().params_per_channel == 2
    np.testing.assert_allclose(Gaussian().mean(out), 0.2)
