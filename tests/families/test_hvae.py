"""The hierarchical VAE family (jaxae.families.hvae) on jaxae.nets.hierarchical: its loss and
log-weights by hand at random parameters, sampling temperatures, presets and config rules.
The network's own math is tested in tests/nets/test_hierarchical.py."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from family_helpers import random_params as shared_random_params

from jaxae import distributions as dist
from jaxae import inputs, sampling, training
from jaxae.conditioning import Conditioning
from jaxae.config import HVAE_PRESETS, Config, validate
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.hvae import HVAE
from jaxae.likelihoods import Bernoulli
from jaxae.nets.hierarchical import HierarchicalNet, HVAEArch, group_temperatures

SPEC = InputSpec(image_shape=(4, 4, 1), num_classes=0, mode="binary")
LOG_2PI = math.log(2 * math.pi)
TWO_LEVELS = ((4, 1, 2), (1, 1, 1))      # groups at 1x1, 4x4, 4x4 (top first): noise 2 + 32 + 32


def random_params(model, seed: int, scale: float = 0.5):
    """family_helpers.random_params with scale 0.5 by default: unlike the initialisation the prior
    blocks' last convs are non-zero, so the learned priors are not N(0, I)."""
    return shared_random_params(model, seed, scale)


def tiny_model(stages, zdim=2, **settings) -> HVAE:
    arch = HVAEArch(width=8, bottleneck=4, zdim=zdim, stages=stages)
    return HVAE(net=HierarchicalNet(arch=arch, out_channels=1), likelihood=Bernoulli(), spec=SPEC,
                latent_dim=arch.top_dim, noise_dim=arch.noise_dim, convolutional=True, **settings)


def binary_x(n: int, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((n, 4, 4, 1)) < 0.3, jnp.float32)


def sample_noise(keys, s, dim):
    """Sample s of log_weights: N(0, I) from fold_in(fold_in(fold_in(key, MODEL_FOLD), s), 0)."""
    draw = lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, s), 0), (dim,))  # noqa: E731
    return jax.vmap(draw)(inputs.fold(keys, inputs.MODEL_FOLD))


def np_log_density(z, mean, logstd):
    z, mean, logstd = (np.asarray(a, np.float64) for a in (z, mean, logstd))
    return -0.5 * LOG_2PI - logstd - 0.5 * ((z - mean) / np.exp(logstd)) ** 2


def np_bernoulli_log_prob(logits, x):
    """log p(x | logits) of binary images, float64, summed over (H, W, C)."""
    logits, x = np.asarray(logits, np.float64), np.asarray(x, np.float64)
    return -np.sum(np.logaddexp(0.0, -(2 * x - 1) * logits), axis=(-3, -2, -1))


def per_example(a):
    return np.sum(a, axis=tuple(range(1, np.ndim(a))))


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --- one group is a VAE -------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def one_group_pieces(model, params, x, keys):
    batch = {"x": x, "x_in": x}
    mean, logvar = model.encode(params, x)
    eps = jax.vmap(lambda k: jax.random.normal(k, (model.noise_dim,)))(inputs.fold(keys, inputs.MODEL_FOLD))
    z = mean + jnp.exp(0.5 * logvar) * eps
    z1 = mean + jnp.exp(0.5 * logvar) * sample_noise(keys, 0, model.noise_dim)
    decode = lambda v: model.net.apply({"params": params}, v, method=HierarchicalNet.decode)  # noqa: E731
    return (model.eval_terms(params, batch, keys), model.log_weights(params, x, keys, 1)[:, 0],
            (mean, logvar, z, decode(z), z1, decode(z1)))


def test_one_group_is_exactly_a_vae():
    """With one group the prior is N(0, I): nelbo = -log p(x|z) + KL(q(z|x) || N(0, I)), with
    z = mean + std * eps decoded by the same network, and the IWAE log-weight is
    log p(x|z) + log N(z; 0, I) - log q(z|x)."""
    model = tiny_model(((4, 1, 1),))
    assert model.noise_dim == model.latent_dim == model.prior_dim == 32
    params = random_params(model, seed=1)
    x, keys = binary_x(3), inputs.example_keys(jax.random.key(1), 3)
    terms, log_w, (mean, logvar, z, logits, z1, logits1) = f64(one_group_pieces(model, params, x, keys))
    kl = np.sum(dist.gaussian_kl(mean, logvar), -1)
    assert np.all(kl > 1.0)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(terms["kl_per_unit"][:, 0], kl, rtol=1e-5)
    np.testing.assert_allclose(terms["recon"], -np_bernoulli_log_prob(logits, x), rtol=1e-5)
    np.testing.assert_allclose(terms["nelbo"], terms["recon"] + terms["kl"], rtol=1e-6)
    # The IWAE pass: one sample's weight from the same pieces.
    std = np.exp(0.5 * logvar)
    expected = (np_bernoulli_log_prob(logits1, x) + per_example(np_log_density(z1, 0.0, 0.0))
                - per_example(np_log_density(z1, mean, np.log(std))))
    np.testing.assert_allclose(log_w, expected, rtol=1e-5, atol=1e-4)


@functools.partial(jax.jit, static_argnums=0)
def loss_and_terms(model, params, batch, keys, step=0):
    return model.loss(params, batch, keys, step), model.eval_terms(params, batch, keys)


# --- the hierarchy at random parameters: log-weights and the ELBO ------------------------------

SAMPLES = 1000


@pytest.fixture(scope="module")
def two_levels():
    """A two-level, three-group hierarchy at random params (learned priors away from N(0, I)),
    in one compiled program: log_weights (B, SAMPLES), the noise of each sample, and the
    network's training pass (closed-form KL per group) on each sample's noise with every
    module's output captured (flax capture_intermediates)."""
    model = tiny_model(TWO_LEVELS)
    params = random_params(model, seed=2, scale=0.3)
    x, keys = binary_x(2, seed=3), inputs.example_keys(jax.random.key(4), 2)

    @jax.jit
    def pieces(params, x, keys):
        eps = jax.vmap(lambda s: sample_noise(keys, s, model.noise_dim), out_axes=1)(jnp.arange(SAMPLES))  # (B, S, N)
        rows = jnp.repeat(x, SAMPLES, axis=0)                                            # (B * S, H, W, C)
        (out, kl, _), captured = model.net.apply({"params": params}, rows, eps.reshape(-1, model.noise_dim),
                                                 capture_intermediates=True, mutable=["intermediates"])
        return {"log_w": model.log_weights(params, x, keys, SAMPLES), "eps": eps, "out": out, "kl": kl,
                "captured": captured["intermediates"]}

    return model, np.asarray(x, np.float64), f64(pieces(params, x, keys))


def group_log_ratios(model, got):
    """Per group, log N(z; p) - log N(z; q) summed over the group (B * S,), with p read off the
    prior block (N(0, I) for the top group), q checked to be p shifted by the posterior block's
    offsets (NVAE), and z checked to be q_mean + q_std * eps_g for the group's slice of eps."""
    arch = model.net.arch
    offsets = np.cumsum([0, *arch.group_sizes()])
    eps = got["eps"].reshape(-1, model.noise_dim)
    ratios = []
    for g, res in enumerate(arch.group_resolutions()):
        group = got["captured"][f"groups_{g}"]
        _, _, _, z, (q_mean, q_logstd) = group["__call__"][0]               # (B * S, res, res, zdim)
        if g == 0:
            assert "prior" not in group
            p_mean = p_logstd = np.zeros_like(q_mean)
        else:
            p_mean, p_logstd = np.split(group["prior"]["__call__"][0], [arch.zdim, 2 * arch.zdim], -1)[:2]
            assert np.mean(np.abs(p_mean)) > 0.05 and np.mean(np.abs(p_logstd)) > 0.05, g   # A learned prior.
        d_mean, d_logstd = np.split(group["posterior"]["__call__"][0], 2, -1)
        np.testing.assert_allclose(q_mean, p_mean + d_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q_logstd, p_logstd + d_logstd, rtol=1e-5, atol=1e-6)
        eps_g = eps[:, offsets[g]:offsets[g + 1]].reshape(-1, res, res, arch.zdim)
        np.testing.assert_allclose(z, q_mean + np.exp(q_logstd) * eps_g, rtol=1e-5, atol=1e-5)
        ratios.append(per_example(np_log_density(z, p_mean, p_logstd) - np_log_density(z, q_mean, q_logstd)))
    return np.stack(ratios, axis=-1)                                        # (B * S, G)


def test_log_weights_are_likelihood_plus_every_groups_log_ratio_at_random_params(two_levels):
    """log w_s = log p(x | z_s) + sum_g sum [log N(z_g; p_g) - log N(z_g; q_g)] for every sample,
    every group's prior p_g and posterior q_g read off the network's own blocks."""
    model, x, got = two_levels
    ratios = group_log_ratios(model, got)
    assert np.median(np.abs(ratios), axis=0).min() > 0.1                    # Every group's term counts.
    log_px = np_bernoulli_log_prob(got["out"], np.repeat(x, SAMPLES, axis=0))
    expected = (log_px + ratios.sum(-1)).reshape(2, SAMPLES)
    np.testing.assert_allclose(got["log_w"], expected, rtol=1e-5, atol=1e-3)
    assert np.std(got["log_w"], axis=1).min() > 0.1                         # The samples differ.


def test_sampled_log_weights_match_the_elbo_in_expectation(two_levels):
    """E_q[log w] = ELBO: per group E_q[log p(z_g) - log q(z_g)] = -KL(q_g || p_g) given the
    groups above, so log w_s minus the training pass's -nelbo_s on the same noise (closed-form
    KL per group, z_<g from q) averages to 0 within Monte-Carlo error."""
    model, x, got = two_levels
    ratios = group_log_ratios(model, got)                                    # (B * S, G)
    kl = got["kl"]                                                           # (B * S, G), closed form
    assert kl.shape == ratios.shape == (2 * SAMPLES, 3) and kl.min() > 0
    diff = (ratios + kl).reshape(2, SAMPLES, 3)                              # zero mean per group
    se = diff.std(1) / math.sqrt(SAMPLES)
    assert np.all(se < 0.15), se
    np.testing.assert_array_less(np.abs(diff.mean(1)), 4 * se + 1e-3)
    assert np.all(kl.reshape(2, SAMPLES, 3).mean(1) > 10 * se)              # Dropping a KL term would show.
    nelbo = (-np_bernoulli_log_prob(got["out"], np.repeat(x, SAMPLES, axis=0)) + kl.sum(-1)).reshape(2, SAMPLES)
    total = got["log_w"] + nelbo
    assert np.all(np.abs(total.mean(1)) < 4 * total.std(1) / math.sqrt(SAMPLES) + 1e-3)


# --- the loss: per-group KLs, beta and free bits ------------------------------------------------

def test_loss_weights_and_frees_each_groups_kl():
    """loss = mean recon + weight * sum_g max(free_bits, mean_b KL_g), the free bits per latent
    group, weight = beta * step / warmup; ``kl_group<g>`` logs each group's batch-mean KL,
    coarsest first."""
    free_bits = 1.0
    model = tiny_model(TWO_LEVELS, beta=2.0, kl_warmup_steps=4, free_bits=free_bits)
    params = random_params(model, seed=2, scale=0.3)
    x, keys = binary_x(2, seed=3), inputs.example_keys(jax.random.key(4), 2)
    (loss, metrics), terms = f64(loss_and_terms(model, params, {"x": x, "x_in": x}, keys, 3))
    assert terms["kl_per_unit"].shape == (2, 3)
    group_kl = terms["kl_per_unit"].mean(0)
    assert np.sum(group_kl < free_bits - 0.1) >= 1 and np.sum(group_kl > free_bits + 0.1) >= 1, group_kl
    for g in range(3):
        np.testing.assert_allclose(metrics[f"kl_group{g}"], group_kl[g], rtol=1e-6)
    assert "kl_group3" not in metrics
    np.testing.assert_allclose(metrics["kl_weight"], 1.5, rtol=1e-6)
    np.testing.assert_allclose(loss, terms["recon"].mean() + 1.5 * np.maximum(group_kl, free_bits).sum(), rtol=1e-6)
    np.testing.assert_allclose(metrics["nelbo"], terms["nelbo"].mean(), rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], terms["kl_per_unit"].sum(-1), rtol=1e-6)
    np.testing.assert_allclose(terms["nelbo"], terms["recon"] + terms["kl"], rtol=1e-6)




def test_logistic_mixture_on_colour_images():
    """hvae with the 10-logistic likelihood on 8-bit colour images (as hvae_cifar_small): the
    loss is the NELBO, every group's KL is logged, random bytes score about 8 bits/dim."""
    spec = InputSpec((4, 4, 3), 0, "grey")
    preset = make_model(Config.create(model="hvae", arch="hvae_cifar_small", likelihood="logistic_mixture",
                                      binarize="none"), InputSpec((32, 32, 3), 10, "grey"))
    assert preset.likelihood.output_channels(3) == 100 and preset.net.out_channels == 100
    arch = HVAEArch(width=8, bottleneck=4, zdim=2, stages=((4, 1, 1), (1, 1, 1)))
    model = HVAE(net=HierarchicalNet(arch=arch, out_channels=100), likelihood=preset.likelihood, spec=spec,
                 latent_dim=arch.top_dim, noise_dim=arch.noise_dim, convolutional=True)
    params = random_params(model, seed=7)
    images = jnp.asarray(np.random.default_rng(8).integers(0, 256, (4, 4, 4, 3)), jnp.uint8)
    keys = inputs.example_keys(jax.random.key(9), 4)
    batch = inputs.Preprocessing(spec)({"image": images}, keys)
    np.testing.assert_allclose(batch["x"], np.asarray(images) / 255, rtol=1e-6)
    (loss, metrics), terms = f64(loss_and_terms(model, params, batch, keys))
    np.testing.assert_allclose(loss, terms["nelbo"].mean(), rtol=1e-6)
    assert 6.0 < float(loss) / (4 * 4 * 3 * math.log(2)) < 12.0           # bits/dim of random bytes: about 8.
    for g in range(arch.num_groups):
        np.testing.assert_allclose(metrics[f"kl_group{g}"], terms["kl_per_unit"][:, g].mean(), rtol=1e-6)
        assert metrics[f"kl_group{g}"] > 0.1


# --- sampling -----------------------------------------------------------------------------------

def test_prior_samples_ancestral_and_per_group_temperatures():
    model = tiny_model(TWO_LEVELS)
    arch = model.net.arch
    params = random_params(model, seed=6)
    assert model.prior_dim == model.noise_dim == 66 > model.latent_dim == 2
    assert model.noise_scale([0.8]) == 0.8
    np.testing.assert_array_equal(model.noise_scale([1.0, 0.5, 0.25]), group_temperatures(arch, [1.0, 0.5, 0.25]))
    with pytest.raises(ConfigError, match="--temperature: give one temperature or one per latent group"):
        model.noise_scale([1.0, 0.5])
    decode = jax.jit(model.decode)
    sample = lambda key, temperature: sampling.sample_prior(model, params, key, 3, temperature)  # noqa: E731
    # The draws are N(0, temperature^2) noise for every group, decoded ancestrally.
    scale = model.noise_scale([1.0, 0.5, 0.25])
    v = scale * jax.random.normal(jax.random.key(1), (3, model.prior_dim))
    warm = np.asarray(sample(jax.random.key(1), temperature=scale))
    assert warm.shape == (3, 4, 4, 1) and warm.min() >= 0 and warm.max() <= 1
    np.testing.assert_allclose(warm, decode(params, v), rtol=1e-5, atol=1e-6)
    assert np.std(warm, axis=0).mean() > 0.01                         # Warm samples differ.
    # Temperature 0 below the top group: the lower groups take their prior means, which is
    # what decoding the top group's code alone (zero noise below it) does.
    top_only = model.noise_scale([1.0, 0.0, 0.0])
    top = jax.random.normal(jax.random.key(2), (3, model.prior_dim)).at[:, model.latent_dim:].set(0.0)
    np.testing.assert_allclose(sample(jax.random.key(2), temperature=top_only), decode(params, top),
                               rtol=1e-5, atol=1e-6)
    # Temperature -> 0 everywhere: every key gives the prior-mean path.
    cold = model.noise_scale([1e-6] * 3)
    np.testing.assert_allclose(sample(jax.random.key(1), temperature=cold), sample(jax.random.key(2), temperature=cold),
                               atol=1e-5)


# --- presets and config rules -------------------------------------------------------------------

def test_presets_build_for_their_images():
    for name, shape, likelihood in (("hvae_mnist", (28, 28, 1), "bernoulli"),
                                    ("hvae_cifar_small", (32, 32, 3), "logistic_mixture"),
                                    ("hvae_cifar", (32, 32, 3), "logistic_mixture"),
                                    ("hvae_64", (64, 64, 3), "logistic_mixture"),
                                    ("hvae_256", (256, 256, 3), "logistic_mixture")):
        arch = HVAEArch(**HVAE_PRESETS[name])
        arch.check(shape)
        config = Config.create(model="hvae", arch=name, likelihood=likelihood,
                               binarize="dynamic" if likelihood == "bernoulli" else "none")
        model = make_model(config, InputSpec(shape, 10, "grey"))
        assert isinstance(model, HVAE) and model.net.arch == arch and model.convolutional
        assert model.latent_dim == arch.top_dim and model.prior_dim == model.noise_dim == arch.noise_dim
        assert model.net.out_channels == model.likelihood.output_channels(shape[2])
    # Traced (not run), the MNIST preset's prior samples have the images' shape.
    mnist = make_model(Config.create(model="hvae", arch="hvae_mnist"), InputSpec((28, 28, 1), 10, "binary"))
    assert mnist.net.arch.num_groups == 9 and mnist.latent_dim == 8
    params = jax.eval_shape(mnist.init, jax.random.key(0))
    assert jax.eval_shape(mnist.decode, params, jnp.zeros((2, mnist.prior_dim))).shape == (2, 28, 28, 1)


def test_flow_posteriors_train_every_flow_and_one_sample_bound_is_the_nelbo():
    """hvae with an IAF in every group's posterior: the loss reaches every group's flow, and
    with one sample on the same noise log w = -(recon + sum of the groups' KL estimates)."""
    model = dataclasses.replace(tiny_model(TWO_LEVELS), net=HierarchicalNet(
        arch=HVAEArch(width=8, bottleneck=4, zdim=2, stages=TWO_LEVELS), out_channels=1, flow_steps=1,
        flow_hidden=4))
    params = random_params(model, seed=5, scale=0.3)
    x, keys = binary_x(2, seed=6), inputs.example_keys(jax.random.key(7), 2)

    @jax.jit
    def pieces(params):
        grads = jax.grad(lambda p: model.loss(p, {"x": x, "x_in": x}, keys)[0])(params)
        eps = sample_noise(keys, 0, model.noise_dim)
        out, kl, _ = model.net.apply({"params": params}, x, eps)
        return grads, model.log_weights(params, x, keys, 1)[:, 0], -model.likelihood.log_prob(out, x), kl

    grads, log_w, recon, kl = pieces(params)
    for g in range(model.net.arch.num_groups):
        norm = sum(float(jnp.sum(jnp.square(a))) for a in jax.tree.leaves(grads[f"groups_{g}"]["flow"]))
        assert norm > 1e-8, g
    np.testing.assert_allclose(log_w, -(np.asarray(recon) + np.sum(kl, axis=-1)), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("flow_steps", [0, 1])
def test_reconstruction_puts_every_group_at_its_posteriors_code(flow_steps):
    """reconstruct(x) = the decoder's mean with every group at q's mean given the groups above
    (through its flow, if any): the importance-sampling pass at zero noise, another code path.
    Decoding the top group alone (lower groups at their prior means) would differ."""
    model = dataclasses.replace(tiny_model(TWO_LEVELS), net=HierarchicalNet(
        arch=HVAEArch(width=8, bottleneck=4, zdim=2, stages=TWO_LEVELS), out_channels=1, flow_steps=flow_steps,
        flow_hidden=4))
    params = random_params(model, seed=8, scale=1.0)
    x = binary_x(3, seed=9)
    out, _ = model.net.apply({"params": params}, x, jnp.zeros((3, 1, model.noise_dim)),
                             method=HierarchicalNet.sample_and_score)
    got = np.asarray(jax.jit(model.reconstruct)(params, x))
    np.testing.assert_allclose(got, jax.nn.sigmoid(out[:, 0]), rtol=1e-5, atol=1e-6)
    assert np.abs(got - np.asarray(model.decode(params, model.encode(params, x)[0]))).mean() > 0.01


def conditioned_model(kind: str) -> HVAE:
    """TWO_LEVELS with an IAF step per group, conditioned on a label of 3 classes or on the
    2x2 box average of the 4x4 image."""
    arch = HVAEArch(width=8, bottleneck=4, zdim=2, stages=TWO_LEVELS)
    spec = dataclasses.replace(SPEC, num_classes=3)
    return HVAE(net=HierarchicalNet(arch=arch, out_channels=1, flow_steps=1, flow_hidden=4, conditioned=True),
                likelihood=Bernoulli(), spec=spec, latent_dim=arch.top_dim, noise_dim=arch.noise_dim,
                conditioning=Conditioning.of(kind, spec, 2), convolutional=True)


@pytest.mark.parametrize("kind", ["label", "lowres"])
def test_conditioned_net_sees_the_condition_only_through_its_projections(kind):
    """At random parameters: each importance sample's log-weight is the training pass's
    -(recon + KL estimates) on that sample's noise and its own example's condition (so the
    condition is repeated per sample, not tiled); the condition moves the prior below the top
    group and p(x|z); and with the condition's convs at zero the net is the unconditioned one
    with the same other parameters."""
    model = conditioned_model(kind)
    params = random_params(model, seed=31, scale=0.5)
    assert set(params) >= {"cond_4", "cond_1"}
    x, keys = binary_x(2, seed=32), inputs.example_keys(jax.random.key(33), 2)
    labels = jnp.array([0, 2])
    cond = model.condition(model.given(x, labels))
    other = model.condition(model.given(1.0 - x, jnp.array([1, 1])))

    plain = dataclasses.replace(model.net, conditioned=False)

    @jax.jit
    def pieces(params, cond, other):
        """One compiled call (the hierarchical net is slow op by op)."""
        noise = [sample_noise(keys, s, model.noise_dim) for s in (0, 1)]
        scored = model.net.apply({"params": params}, x, jnp.stack(noise, axis=1), cond,
                                 method=HierarchicalNet.sample_and_score)
        single = [model.net.apply({"params": params}, x, n, cond) for n in noise]
        v = jnp.zeros((2, model.noise_dim))
        decoded = [model.net.apply({"params": params}, v, c, method=HierarchicalNet.decode) for c in (cond, other)]
        zeroed = {k: (jax.tree.map(jnp.zeros_like, w) if k.startswith("cond_") else w) for k, w in params.items()}
        got = model.net.apply({"params": zeroed}, x, noise[0], cond)
        want = plain.apply({"params": {k: w for k, w in params.items() if not k.startswith("cond_")}}, x, noise[0])
        return scored, single, decoded, got, want

    (out, log_ratio), single, decoded, got, want = pieces(params, cond, other)
    for s, (out_s, kl_s, _) in enumerate(single):
        np.testing.assert_allclose(out[:, s], out_s, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_ratio[:, s], -np.sum(kl_s, axis=-1), rtol=1e-5, atol=1e-4)
    # The prior's means below the top group, and the decoder, depend on the condition.
    assert np.max(np.abs(np.asarray(decoded[0]) - np.asarray(decoded[1]))) > 1e-3
    # The condition's convs at zero: the unconditioned net's numbers.
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_conditioned_hvae_through_make_model():
    spec = InputSpec((28, 28, 1), 10, "binary")
    model = make_model(Config.create(model="hvae", arch="hvae_mnist", condition="lowres"), spec)
    assert model.net.conditioned and model.conditioning.lowres_shape == (7, 7, 1)
    labelled = make_model(Config.create(model="hvae", arch="hvae_mnist", conditional=True), spec)
    assert labelled.conditioning.kind == "label"
    assert not make_model(Config.create(model="hvae", arch="hvae_mnist"), spec).net.conditioned


def test_config_rules():
    spec = InputSpec((28, 28, 1), 10, "binary")
    with pytest.raises(ConfigError, match="--model hvae needs an --arch"):
        make_model(Config.create(model="hvae", arch="mlp"), spec)
    with pytest.raises(ConfigError, match="--arch hvae_mnist is a preset of --model hvae"):
        make_model(Config.create(model="vae", arch="hvae_mnist"), spec)
    with pytest.raises(ConfigError, match="hvae_mnist"):
        make_model(Config.create(model="hvae", arch="hvae_mnist"), InputSpec((32, 32, 3), 10, "grey"))
    with pytest.raises(ConfigError, match="--remat is implemented for --model hvae, not --model vae"):
        make_model(Config.create(model="vae", remat=True), spec)
    # --dtype and --remat reach the network (their numbers: tests/nets/test_bfloat16.py, test_hierarchical.py).
    model = make_model(Config.create(model="hvae", arch="hvae_mnist", dtype="bfloat16", remat=True), spec)
    assert model.net.dtype == jnp.bfloat16 and model.net.remat
    model = make_model(Config.create(model="hvae", arch="hvae_mnist"), spec)
    assert model.net.dtype is None and not model.net.remat
    with pytest.raises(ConfigError, match="--model hvae sets its own hierarchy"):
        make_model(Config.create(model="hvae", arch="hvae_mnist", stochastic_layers=2), spec)
    with pytest.raises(ConfigError, match="--num_importance_samples 5 is not used by --model hvae"):
        make_model(Config.create(model="hvae", arch="hvae_mnist", num_importance_samples=5), spec)
    model = make_model(Config.create(model="hvae", arch="hvae_mnist", beta=2.0, free_bits=0.5), spec)
    assert (model.beta, model.free_bits) == (2.0, 0.5)
    assert model.net.flow_steps == 0                    # Gaussian posteriors unless asked.
    model = make_model(Config.create(model="hvae", arch="hvae_mnist", group_iaf_steps=2, iaf_hidden=16), spec)
    assert (model.net.flow_steps, model.net.flow_hidden) == (2, 16)
    with pytest.raises(ConfigError, match="--group_iaf_steps 2 is not used by --model vae"):
        make_model(Config.create(model="vae", group_iaf_steps=2), spec)
    with pytest.raises(ConfigError, match="--group_iaf_steps must be >= 0 \\(0: no flow\\), got -1"):
        validate(Config.create(model="hvae", arch="hvae_mnist", group_iaf_steps=-1))
    # The stabilisers hvae training relies on are validated with the rest of the config.
    with pytest.raises(ConfigError, match="ema_decay"):
        validate(Config.create(ema_decay=1.0))
    with pytest.raises(ConfigError, match="skip_threshold"):
        validate(Config.create(skip_threshold=-1.0))


@pytest.mark.slow
def test_short_training_on_real_digits_lowers_the_test_nelbo(mnist5k, monkeypatch):
    """Three of hvae_mnist's resolutions (28, 7, 1) at width 16 with one block and group each
    (patched in this process; the full preset is built in test_registry and its shapes checked
    above), 40 steps of batch 32 on the embedded digits: the held-out NELBO (the first 100
    test digits, fixed binarization) falls far below the untrained model's (~800 nats; ~320
    after)."""
    from jaxae import data, evaluation

    monkeypatch.setitem(HVAE_PRESETS, "hvae_mnist", dict(
        HVAE_PRESETS["hvae_mnist"], width=16, bottleneck=8, stages=((28, 1, 1), (7, 1, 1), (1, 1, 1))))
    builder, train, test = mnist5k
    config = Config.create(model="hvae", arch="hvae_mnist", batch_size=32, grad_clip=200.0)
    model = make_model(config, data.input_spec(config.data, config.model, builder, train))
    optimizer = training.make_optimizer(config.optimizer, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    step = jax.jit(training.make_train_step(model, optimizer))
    held_out = test.images[:100]
    before = evaluation.evaluate(model, state.params, held_out, inputs.eval_key(), batch_size=100)["nelbo"]
    order = np.random.default_rng(0).permutation(len(train))
    for i in range(40):
        state, _ = step(state, {"image": jnp.asarray(train.images[order[32 * i:32 * (i + 1)]])}, jax.random.key(i))
    after = evaluation.evaluate(model, state.params, held_out, inputs.eval_key(), batch_size=100)
    assert before > 600 and after["nelbo"] < 0.6 * before, (before, after)
    assert after["bpd"] == pytest.approx(after["nelbo"] / (784 * math.log(2)))
