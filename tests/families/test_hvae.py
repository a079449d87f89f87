"""The hierarchical VAE (jaxae/models/hvae.py): structure, objective, IWAE weights, sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import distributions as dist
from jaxae import sampling, training
from jaxae.config import HVAE_PRESETS, Config, ConfigError, validate
from jaxae.data import InputSpec
from jaxae.likelihoods import Bernoulli
from jaxae.models import AutoencoderModel, HierarchicalNet, HVAEArch, make_model
from jaxae.models.hvae import group_temperatures
from jaxae.objectives import ObjectiveSettings

SPEC = InputSpec(image_shape=(8, 8, 1), num_classes=0, mode="binary")
SETTINGS = ObjectiveSettings.from_config(Config())


def tiny_model(stages, zdim=2) -> AutoencoderModel:
    arch = HVAEArch(width=8, bottleneck=4, zdim=zdim, stages=stages)
    return AutoencoderModel(family="hvae", net=HierarchicalNet(arch=arch, out_channels=1), likelihood=Bernoulli(),
                            spec=SPEC, latent_dim=arch.top_dim, settings=SETTINGS, noise_dim=arch.noise_dim)


def binary_batch(n: int, seed: int = 0) -> dict:
    return {"image": (jax.random.uniform(jax.random.key(seed), (n, 8, 8, 1)) < 0.3).astype(jnp.uint8)}


def test_arch_bookkeeping():
    arch = HVAEArch(width=8, bottleneck=4, zdim=3, stages=((8, 1, 2), (4, 1, 1), (1, 1, 2)))
    assert arch.num_groups == 5
    assert arch.group_resolutions() == [1, 1, 4, 8, 8]
    assert arch.group_sizes() == [3, 3, 48, 192, 192]
    assert arch.noise_dim == 438 and arch.top_dim == 3
    with pytest.raises(ValueError, match="8x8"):
        arch.check((28, 28, 1))
    with pytest.raises(ValueError, match="integer factors"):
        HVAEArch(8, 4, 2, ((8, 1, 1), (3, 1, 1))).check((8, 8, 1))
    scale = np.asarray(group_temperatures(arch, [1.0, 0.5, 0.5, 0.25, 0.25]))
    assert scale.shape == (438,) and scale[0] == 1.0 and scale[3] == 0.5 and scale[-1] == 0.25
    assert np.all(np.asarray(group_temperatures(arch, [0.7])) == np.float32(0.7))
    with pytest.raises(ValueError, match="one per latent group"):
        group_temperatures(arch, [1.0, 0.5])


def test_one_group_is_exactly_a_vae():
    """With one group the prior is N(0, I): nelbo = -log p(x | z) + KL(q(z|x) || N(0, I)),
    with z = mean + std * eps decoded by the same network, and the IWAE log-weight is
    log p(x|z) + log N(z; 0, I) - log q(z|x)."""
    model = tiny_model(((8, 1, 1),))
    params = model.init(jax.random.key(0))
    batch, keys = binary_batch(4), jax.random.split(jax.random.key(1), 4)
    terms = model.per_example(params, batch, keys)
    x = model.model_input(batch["image"], keys)
    mean, logvar = model.posterior(params, x)
    np.testing.assert_allclose(terms["kl"], dist.kl_diag_gaussian_standard_normal(mean, logvar), rtol=1e-5)
    eps = jax.vmap(lambda k: jax.random.normal(k, (model.eps_dim,)))(model.latent_keys(keys))
    z = mean + jnp.exp(0.5 * logvar) * eps
    out = model.net.apply({"params": params}, z, method=HierarchicalNet.decode)
    np.testing.assert_allclose(terms["recon"], -model.likelihood.log_prob(out, x), rtol=1e-5)
    np.testing.assert_allclose(terms["nelbo"], terms["recon"] + terms["kl"], rtol=1e-6)
    # The IWAE pass: one sample's weight from the same pieces.
    log_w = model.log_importance_weights(params, x, model.latent_keys(keys), 1)[:, 0]
    draw = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, 0), 0), (model.eps_dim,)))
    z1 = mean + jnp.exp(0.5 * logvar) * draw(model.latent_keys(keys))
    out1 = model.net.apply({"params": params}, z1, method=HierarchicalNet.decode)
    expected = (model.likelihood.log_prob(out1, x) + dist.standard_normal_log_prob(z1)
                - dist.diag_gaussian_log_prob(z1, mean, logvar))
    np.testing.assert_allclose(log_w, expected, rtol=1e-4, atol=1e-3)


def test_sampled_log_weights_match_the_elbo_in_expectation():
    """E_q[log w] = ELBO: the mean of many IWAE log-weights equals -nelbo (closed-form KLs
    per group, z_<l from q) within Monte-Carlo error, for a three-level hierarchy."""
    model = tiny_model(((8, 1, 1), (4, 1, 1), (1, 1, 2)))
    params = model.init(jax.random.key(3))
    batch, keys = binary_batch(2, seed=4), jax.random.split(jax.random.key(5), 2)
    x = model.model_input(batch["image"], keys)
    log_w = np.asarray(model.log_importance_weights(params, x, model.latent_keys(keys), 4000))
    # -nelbo averaged over many single-sample draws has the same expectation; compare with
    # the per-example mean of log w, to 5 standard errors of both estimates.
    many = jax.vmap(lambda k: model.per_example(params, batch, jax.random.split(k, 2))["nelbo"])(
        jax.random.split(jax.random.key(6), 4000))
    for b in range(2):
        se = math.sqrt(np.var(log_w[b]) / 4000 + np.var(many[:, b]) / 4000)
        assert abs(np.mean(log_w[b]) + np.mean(many[:, b])) < 5 * se + 1e-3, (b, np.mean(log_w[b]),
                                                                              np.mean(many[:, b]), se)
        del se


def test_kl_per_group_and_posterior_relative_to_prior():
    model = tiny_model(((8, 1, 1), (4, 1, 2), (1, 1, 1)))
    params = model.init(jax.random.key(0))
    terms = model.per_example(params, binary_batch(3), jax.random.split(jax.random.key(1), 3), kl_per_dim=True)
    assert terms["kl_per_dim"].shape == (3, 4)
    assert np.all(np.asarray(terms["kl_per_dim"]) >= -1e-5)
    np.testing.assert_allclose(terms["kl"], jnp.sum(terms["kl_per_dim"], -1), rtol=1e-5)
    # Every prior block starts as the zero function: at init each prior is N(0, I), and only
    # the first group's prior has no parameters at all.
    assert "prior" not in params["groups_0"] and "prior" in params["groups_1"]
    zero_last = params["groups_1"]["prior"]
    assert all(float(jnp.max(jnp.abs(v["kernel"]))) == 0 for k, v in zero_last.items() if k == "Conv_3")


def test_prior_samples_ancestral_and_temperature():
    model = tiny_model(((8, 1, 1), (4, 1, 1), (1, 1, 1)))
    params = model.init(jax.random.key(0))
    assert model.prior_dim == model.eps_dim > model.latent_dim
    images = sampling.sample_prior(model, params, jax.random.key(1), 5)
    assert images.shape == (5, 8, 8, 1)
    cold = group_temperatures(model.net.arch, [1e-6])
    a = sampling.sample_prior(model, params, jax.random.key(1), 3, cold)
    b = sampling.sample_prior(model, params, jax.random.key(2), 3, cold)
    np.testing.assert_allclose(a, b, atol=1e-4)  # temperature -> 0: the deterministic prior mean path
    # Decoding a top code alone fills the lower groups with their prior means.
    top = jax.random.normal(jax.random.key(3), (2, model.latent_dim))
    full = jnp.concatenate([top, jnp.zeros((2, model.eps_dim - model.latent_dim))], -1)
    np.testing.assert_allclose(model.decode_mean(params, top), model.decode_mean(params, full), rtol=1e-6)


def test_config_rules():
    with pytest.raises(ConfigError, match="--model hvae needs an --arch"):
        validate(Config(model="hvae", arch="mlp"))
    with pytest.raises(ConfigError, match="--model hvae needs an --arch"):
        validate(Config(model="vae", arch="hvae_mnist"))
    with pytest.raises(ConfigError, match="ema_decay"):
        validate(Config(ema_decay=1.0))
    with pytest.raises(ConfigError, match="skip_threshold"):
        validate(Config(skip_threshold=-1.0))
    with pytest.raises(ConfigError, match="hvae_mnist"):
        make_model(Config(model="hvae", arch="hvae_mnist"), InputSpec((32, 32, 3), 10, "grey"))
    for name in HVAE_PRESETS:
        HVAEArch(**HVAE_PRESETS[name]).check((28, 28, 1) if "mnist" in name else (32, 32, 3))


@pytest.mark.slow
def test_short_training_on_real_digits_lowers_the_test_nelbo(mnist5k):
    """hvae_mnist, 40 steps of batch 32 on the embedded digits: the held-out NELBO (500 test
    digits, fixed binarization) falls far below the untrained model's (~800 nats)."""
    from jaxae import data, evaluation

    builder, train, test = mnist5k
    config = Config(model="hvae", arch="hvae_mnist", batch_size=32, grad_clip=200.0)
    model = make_model(config, data.input_spec(config, builder, train))
    optimizer = training.make_optimizer(config, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    step = jax.jit(training.make_train_step(model, optimizer))
    before = evaluation.evaluate(model, state.params, test.images, data.eval_key())["nelbo"]
    order = np.random.default_rng(0).permutation(len(train))
    for i in range(40):
        state, _ = step(state, {"image": jnp.asarray(train.images[order[32 * i:32 * (i + 1)]])}, jax.random.key(i))
    after = evaluation.evaluate(model, state.params, test.images, data.eval_key())
    assert before > 600 and after["nelbo"] < 0.6 * before, (before, after)
    assert after["bpd"] == pytest.approx(after["nelbo"] / (784 * math.log(2)))


def test_cifar_preset_trains_a_few_steps():
    """hvae_cifar_small with the 10-logistic likelihood on 8-bit colour images: a few steps
    lower the loss on a batch, every group's KL is reported, the EMA moves."""
    shape = (32, 32, 3)
    config = Config(model="hvae", arch="hvae_cifar_small", batch_size=8, grad_clip=200.0, ema_decay=0.9,
                    likelihood="logistic_mixture", binarize="none")
    model = make_model(config, InputSpec(shape, 10, "grey"))
    optimizer = training.make_optimizer(config, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(0), ema=True)
    step = jax.jit(training.make_train_step(model, optimizer, ema_decay=0.9))
    batch = {"image": jax.random.randint(jax.random.key(1), (8, *shape), 0, 256).astype(jnp.uint8)}
    initial = state.params
    losses = []
    for i in range(4):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
        assert {f"kl_group{g}" for g in range(model.net.arch.num_groups)} <= set(metrics)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert int(state.skipped) == 0
    # ema = 0.9^4 * initial + (1 - 0.9^4) * (a weighted mean of the new params): strictly between.
    leaf = lambda tree: np.asarray(jax.tree.leaves(tree)[0])  # noqa: E731
    assert not np.allclose(leaf(state.ema_params), leaf(initial)) and not np.allclose(leaf(state.ema_params),
                                                                                      leaf(state.params))
