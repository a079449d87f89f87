import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxae.likelihoods import Bernoulli, DiscretizedLogisticMixture, Gaussian


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
    assert Gaussian(scale=s).output_channels(3) == 3


def test_gaussian_learned_scale_uses_second_half_as_log_scale():
    out = jnp.concatenate([jnp.full((1, 1, 1, 1), 0.2), jnp.full((1, 1, 1, 1), math.log(0.5))], axis=-1)
    x = jnp.full((1, 1, 1, 1), 0.7)
    hand = -0.5 * math.log(2 * math.pi) - math.log(0.5) - 0.5 * (0.5 / 0.5) ** 2 - math.log(256)
    np.testing.assert_allclose(Gaussian().log_prob(out, x), [hand], rtol=1e-5)
    assert Gaussian().output_channels(3) == 6
    np.testing.assert_allclose(Gaussian().mean(out), 0.2)


def test_gaussian_learned_log_scale_is_clipped_to_minus_7_and_2():
    # Raw log-scales 3 and -9 score as log-scales 2 and -7 (every term of the density matters).
    out = jnp.array([0.4, 0.5, 3.0, -9.0]).reshape(1, 1, 1, 4)
    x = jnp.array([0.9, 0.5005]).reshape(1, 1, 1, 2)
    hand = sum(-0.5 * math.log(2 * math.pi) - s - 0.5 * ((v - m) / math.exp(s)) ** 2 - math.log(256)
               for v, m, s in ((0.9, 0.4, 2.0), (0.5005, 0.5, -7.0)))
    np.testing.assert_allclose(Gaussian().log_prob(out, x), [hand], rtol=1e-5)


def test_bernoulli_and_gaussian_samples():
    logits = jnp.full((4000, 2, 2, 1), math.log(0.3 / 0.7))
    draws = Bernoulli().sample(logits, jax.random.key(0))
    assert set(np.unique(draws).tolist()) == {0.0, 1.0} and Bernoulli().output_channels(3) == 3
    np.testing.assert_allclose(float(draws.mean()), 0.3, atol=0.01)
    # A fixed-scale Gaussian centred on level 100's dequantization interval gives 8-bit levels around 100.
    levels = Gaussian(scale=2 / 256).sample(jnp.full((4000, 2, 2, 1), 100.5 / 256), jax.random.key(1)) * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    np.testing.assert_allclose(float(levels.mean()), 100.0, atol=0.1)
    assert 90 <= float(levels.min()) and float(levels.max()) <= 110


# --- discretized logistic mixture ---------------------------------------------------------

def _dmol_out(rng: np.random.Generator, num_mixtures: int, channels: int, log_scale=(-4.0, 0.0)) -> np.ndarray:
    """Random decoder output for one pixel, (output_channels,), with the documented layout."""
    m = num_mixtures
    parts = [rng.normal(size=m), 0.6 * rng.normal(size=channels * m), rng.uniform(*log_scale, size=channels * m),
             rng.normal(size=channels * (channels - 1) // 2 * m)]
    return np.concatenate(parts).astype(np.float32)


def _all_levels(lik, out: np.ndarray, channels: int) -> np.ndarray:
    """Probabilities of every 8-bit value of one pixel, (256,) * channels, in float64."""
    log_prob = jax.jit(lambda o, x: lik.log_prob(o, x))
    if channels == 1:
        return np.exp(np.asarray(log_prob(out[None, None, None], jnp.arange(256.0).reshape(256, 1, 1, 1) / 255),
                                 np.float64))
    chunk = 16
    gb = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(-1, 2)
    probs = []
    for r0 in range(0, 256, chunk):
        r = np.repeat(np.arange(r0, r0 + chunk), len(gb))[:, None]
        x = np.concatenate([r, np.tile(gb, (chunk, 1))], axis=1).reshape(-1, 1, 1, 3) / 255.0
        probs.append(np.exp(np.asarray(log_prob(out[None, None, None], x.astype(np.float32)), np.float64)))
    return np.concatenate(probs).reshape(256, 256, 256)


def _logistic_cdf(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_logistic_mixture_layout_sizes():
    assert DiscretizedLogisticMixture(10).output_channels(1) == 30
    assert DiscretizedLogisticMixture(10).output_channels(3) == 100  # M logits + 3M means + 3M scales + 3M coeffs.
    assert DiscretizedLogisticMixture(5).output_channels(3) == 50


def test_logistic_mixture_one_component_by_hand():
    mu, log_s = 0.2, -2.5  # On the [-1, 1] scale; s = 0.082, about 10 levels.
    out = jnp.array([0.0, mu, log_s]).reshape(1, 1, 1, 3)
    s = math.exp(log_s)
    levels = np.array([0, 1, 128, 153, 254, 255])
    v = 2 * levels / 255 - 1
    upper = np.where(levels == 255, 1.0, _logistic_cdf((v + 1 / 255 - mu) / s))
    lower = np.where(levels == 0, 0.0, _logistic_cdf((v - 1 / 255 - mu) / s))
    expected = np.log(upper - lower)
    log_prob = jax.jit(DiscretizedLogisticMixture(1).log_prob)
    got = log_prob(out, jnp.asarray(levels / 255, jnp.float32).reshape(6, 1, 1, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Over an image the pixels add up; x is recovered robustly from slightly perturbed k / 255.
    image = jnp.asarray(levels / 255 + 1e-4, jnp.float32).reshape(1, 2, 3, 1)
    np.testing.assert_allclose(log_prob(jnp.tile(out, (1, 2, 3, 1)), image),
                               [expected.sum()], rtol=1e-5)


def test_logistic_mixture_grey_levels_sum_to_one():
    rng = np.random.default_rng(0)
    lik = DiscretizedLogisticMixture(4)
    for log_scale in [(-4.0, 0.0), (-7.0, -6.0), (2.0, 7.0)]:
        probs = _all_levels(lik, _dmol_out(rng, 4, 1, log_scale), 1)
        np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)


def test_logistic_mixture_edge_levels_take_the_tails():
    lik = DiscretizedLogisticMixture(1)
    log_prob = jax.jit(lik.log_prob)
    x = jnp.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    far_below, far_above = jnp.array([0.0, -3.0, -3.0]), jnp.array([0.0, 3.0, -3.0])
    far = -(4 - 1 / 255) * math.exp(3.0)  # log P of the opposite edge: log sigmoid(-(4 - 1/255) / s) ~ -80.
    np.testing.assert_allclose(log_prob(far_below.reshape(1, 1, 1, 3), x), [0.0, far], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(log_prob(far_above.reshape(1, 1, 1, 3), x), [far, 0.0], atol=1e-5, rtol=1e-5)
    # Mirror symmetry: P(0 | mu) = P(255 | -mu).
    out = jnp.array([0.0, 0.3, -1.0])
    np.testing.assert_allclose(log_prob(out.reshape(1, 1, 1, 3), x[:1]),
                               log_prob((out * jnp.array([1, -1, 1])).reshape(1, 1, 1, 3), x[1:]), rtol=1e-6)
    p0 = _logistic_cdf((-1 + 1 / 255 - 0.3) / math.exp(-1.0))
    np.testing.assert_allclose(log_prob(out.reshape(1, 1, 1, 3), x[:1]), [math.log(p0)], rtol=1e-5)


def test_logistic_mixture_rgb_joint_sums_to_one_and_samples_match_it():
    lik = DiscretizedLogisticMixture(2)
    out = _dmol_out(np.random.default_rng(1), 2, 3, log_scale=(-3.0, -1.5))
    probs = _all_levels(lik, out, 3)                                   # (256, 256, 256) over (r, g, b)
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    # The coupling matters: g and r are correlated under this pixel's distribution.
    levels = np.arange(256)
    pr, pg = probs.sum((1, 2)), probs.sum((0, 2))
    cov = np.einsum("rg,r,g->", probs.sum(2), levels, levels) - (pr @ levels) * (pg @ levels)
    assert abs(cov) > 10.0
    # Samples: 8-bit valued, and their histogram over 8x8x8 cells of 32 levels matches the joint.
    n = 200_000
    draws = np.asarray(jax.jit(lik.sample)(jnp.broadcast_to(out, (n, 1, 1, out.size)), jax.random.key(0)))
    draws = draws.reshape(n, 3) * 255
    np.testing.assert_allclose(draws, np.round(draws), atol=1e-4)
    cells = np.round(draws).astype(np.int64) // 32
    counts = np.bincount((cells[:, 0] * 8 + cells[:, 1]) * 8 + cells[:, 2], minlength=512)
    expected = n * probs.reshape(8, 32, 8, 32, 8, 32).sum((1, 3, 5)).reshape(-1)
    keep = expected > 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    assert chi2 / keep.sum() < 1.5, (chi2, keep.sum())
    assert counts[~keep].sum() < 5 * (~keep).sum() + 20


def test_logistic_mixture_grey_samples_match_and_mean_is_the_expectation():
    lik = DiscretizedLogisticMixture(3)
    out = _dmol_out(np.random.default_rng(2), 3, 1, log_scale=(-3.0, -1.0))
    probs = _all_levels(lik, out, 1)
    n = 100_000
    draws = np.asarray(jax.jit(lik.sample)(jnp.broadcast_to(out, (n, 1, 1, out.size)), jax.random.key(3)) * 255).ravel()
    np.testing.assert_allclose(draws, np.round(draws), atol=1e-4)
    counts = np.bincount(np.round(draws).astype(np.int64), minlength=256)
    expected = n * probs
    keep = expected > 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    assert chi2 / keep.sum() < 1.5, (chi2, keep.sum())
    # The mean image is the distribution's expectation (within half a level) and lies in [0, 1].
    mean = float(jax.jit(lik.mean)(jnp.asarray(out).reshape(1, 1, 1, -1)).squeeze())
    assert abs(mean - probs @ (np.arange(256) / 255)) < 0.5 / 255
    extreme = jnp.asarray(np.random.default_rng(4).normal(size=(64, 2, 2, 100)) * 50, jnp.float32)
    rgb_mean = jax.jit(DiscretizedLogisticMixture(10).mean)(extreme)
    assert rgb_mean.shape == (64, 2, 2, 3) and float(rgb_mean.min()) >= 0 and float(rgb_mean.max()) <= 1


def test_logistic_mixture_is_finite_with_gradients_at_extreme_parameters():
    lik = DiscretizedLogisticMixture(10)
    rng = np.random.default_rng(5)
    out = jnp.asarray(rng.choice([-1e4, -30.0, 0.0, 30.0, 1e4], size=(4, 4, 4, 100)), jnp.float32)
    x = jnp.asarray(rng.choice([0, 1, 127, 254, 255], size=(4, 4, 4, 3)) / 255, jnp.float32)
    value, grad = jax.jit(jax.value_and_grad(lambda o: jnp.sum(lik.log_prob(o, x))))(out)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))


def test_logistic_mixture_broadcasts_over_importance_samples():
    lik = DiscretizedLogisticMixture(2)
    out = jnp.asarray(np.random.default_rng(6).normal(size=(2, 3, 4, 4, 20)), jnp.float32)   # (B, S, H, W, K)
    x = jnp.asarray(np.random.default_rng(7).integers(0, 256, size=(2, 4, 4, 3)) / 255, jnp.float32)
    log_prob = jax.jit(lik.log_prob)
    scores = log_prob(out, x[:, None])
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores[1, 2], log_prob(out[1, 2], x[1]), rtol=1e-6)


def _np_log_bin(k: int, mu: float, log_s: float) -> float:
    """log P(level k | mu, s) of the discretized logistic on [-1, 1], tails at 0 and 255."""
    s = math.exp(log_s)
    v = 2 * k / 255 - 1
    cdf = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    upper = 1.0 if k == 255 else cdf((v + 1 / 255 - mu) / s)
    lower = 0.0 if k == 0 else cdf((v - 1 / 255 - mu) / s)
    return math.log(upper - lower)


def test_logistic_one_component_rgb_coupling_by_hand():
    """M = 1, so only the coupling correlates the channels: the green mean is shifted by
    alpha * v_r, the blue by beta * v_r + gamma * v_g (v = the observed levels on [-1, 1]),
    alpha, beta, gamma = tanh of the raw coefficients, in rows (g;r), (b;r), (b;g)."""
    means, log_scales, raw = (0.3, -0.4, 0.1), (-2.0, -1.5, -2.5), (0.8, -0.6, 1.2)
    alpha, beta, gamma = (math.tanh(c) for c in raw)
    out = np.array([0.7, *means, *log_scales, *raw], np.float32)        # logit | means | log-scales | coeffs
    pixels = [(200, 100, 255), (0, 255, 90), (150, 40, 60), (255, 0, 0)]
    expected = []
    for r, g, b in pixels:
        vr, vg = 2 * r / 255 - 1, 2 * g / 255 - 1
        expected.append(_np_log_bin(r, means[0], log_scales[0])
                        + _np_log_bin(g, means[1] + alpha * vr, log_scales[1])
                        + _np_log_bin(b, means[2] + beta * vr + gamma * vg, log_scales[2]))
    x = jnp.asarray(np.array(pixels, np.float32).reshape(4, 1, 1, 3) / 255)
    lik = DiscretizedLogisticMixture(1)
    assert lik.output_channels(3) == out.size == 10
    log_prob = jax.jit(lik.log_prob)
    got = log_prob(jnp.broadcast_to(out, (4, 1, 1, 10)), x)
    assert all(-50 < e < -1 for e in expected), expected     # No pixel is certain.
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Without the coupling (raw coefficients 0) the channels are independent: a different number.
    uncoupled = log_prob(jnp.broadcast_to(out * np.array([1] * 7 + [0] * 3, np.float32), (4, 1, 1, 10)), x)
    assert np.all(np.abs(np.asarray(uncoupled) - np.asarray(got)) > 0.5)
    # The same pixels as one 2x2 image: the log-probability adds up over pixels.
    np.testing.assert_allclose(log_prob(jnp.broadcast_to(out, (1, 2, 2, 10)), x.reshape(1, 2, 2, 3)),
                               [sum(expected)], rtol=1e-5)
