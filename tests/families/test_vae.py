"""The VAE family (jaxae.families.vae: vae, beta_vae, cvae): its loss and evaluation terms by
hand, at parameters away from the initialisation, with the batch a model sees in training
(jaxae.inputs.Preprocessing: augmentation and denoising corruption)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from family_helpers import random_params

from jaxae import distributions as dist
from jaxae import inputs
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.vae import VAE, ConditionalVAE
from jaxae.nets import OneLayerNet

SHAPE = (6, 6, 1)
BINARY = InputSpec(image_shape=SHAPE, num_classes=10, mode="binary")
TINY = dict(hidden_dims=(16,), latent_dim=3)



def binary_images(n: int, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((n, *SHAPE)) < 0.3, jnp.uint8)


def example_keys(n: int, seed: int) -> jax.Array:
    return inputs.example_keys(jax.random.key(seed), n)


@functools.partial(jax.jit, static_argnums=(0, 3))
def prepare(preprocessing, batch, keys, train=False):
    """The model batch a train step (train=True) or evaluation makes of a uint8 batch."""
    return preprocessing(batch, keys, train)


def noise(keys, dim):
    """The family's posterior noise: N(0, I) from each example key's fold inputs.MODEL_FOLD."""
    return jax.vmap(lambda k: jax.random.normal(k, (dim,)))(inputs.fold(keys, inputs.MODEL_FOLD))


@functools.partial(jax.jit, static_argnums=0)
def by_hand(model, params, batch, keys):
    """-log p(x|z) (B,) and KL per unit (B, D) from the encoder and decoder: q(z|x_in) =
    N(mean, e^logvar), z = mean + e^(logvar/2) eps, the likelihood scoring batch["x"]."""
    cond = model.condition(batch.get("label"))
    mean, logvar = model.encode(params, batch["x_in"], batch.get("label"))
    z = mean + jnp.exp(0.5 * logvar) * noise(keys, model.noise_dim)
    logits = model.net.apply({"params": params}, z, cond, method=OneLayerNet.decode)
    return -model.likelihood.log_prob(logits, batch["x"]), dist.gaussian_kl(mean, logvar)


@functools.partial(jax.jit, static_argnums=0)
def eval_terms(model, params, batch, keys):
    return model.eval_terms(params, batch, keys)


@functools.partial(jax.jit, static_argnums=0)
def losses(cases, params, batch, keys):
    """model.loss(params, batch, keys, step) for each (model, step) of ``cases``: one program."""
    return [model.loss(params, batch, keys, step) for model, step in cases]


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_negative_elbo_by_hand_at_zero_weights():
    """Zero weights: q(z|x) = N(m, e^v) from the encoder's output bias, logits 0 everywhere."""
    model = make_model(Config.create(**TINY), BINARY)
    params = jax.tree.map(jnp.zeros_like, random_params(model, seed=0))
    m, v = np.array([0.3, -1.0, 0.8]), np.array([0.5, -0.2, -1.5])
    last = params["encoder"]["Dense_1"]
    params["encoder"]["Dense_1"] = dict(last, bias=jnp.asarray(np.concatenate([m, v]), jnp.float32))
    keys = example_keys(8, 2)
    batch = prepare(inputs.Preprocessing(BINARY), {"image": binary_images(8)}, keys)
    terms = f64(eval_terms(model, params, batch, keys))
    recon = 36 * math.log(2.0)  # Every pixel has probability 1/2 whatever z is.
    kl_per_unit = 0.5 * (np.exp(v) + m * m - 1.0 - v)
    np.testing.assert_allclose(terms["recon"], recon, rtol=1e-6)
    np.testing.assert_allclose(terms["kl_per_unit"], np.tile(kl_per_unit, (8, 1)), rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], kl_per_unit.sum(), rtol=1e-6)
    np.testing.assert_allclose(terms["nelbo"], recon + kl_per_unit.sum(), rtol=1e-6)
    [(loss, metrics)] = losses(((model, 0),), params, batch, keys)
    np.testing.assert_allclose(loss, recon + kl_per_unit.sum(), rtol=1e-5)
    assert float(metrics["kl_weight"]) == 1.0


def test_eval_terms_by_hand_at_random_params():
    model = make_model(Config.create(**TINY), BINARY)
    params = random_params(model, seed=3)
    keys = example_keys(8, 4)
    batch = prepare(inputs.Preprocessing(BINARY), {"image": binary_images(8)}, keys)
    recon, kl_per_unit = f64(by_hand(model, params, batch, keys))
    assert kl_per_unit.min() > 0.01 and recon.min() > 1.0     # Every term counts.
    terms = f64(eval_terms(model, params, batch, keys))
    np.testing.assert_allclose(terms["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(terms["kl_per_unit"], kl_per_unit, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl_per_unit.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(terms["nelbo"], recon + kl_per_unit.sum(-1), rtol=1e-5)
    # The posterior noise is per example: other keys give other recon terms, the same KL.
    other = f64(eval_terms(model, params, batch, example_keys(8, 5)))
    assert np.all(np.abs(other["recon"] - terms["recon"]) > 1e-4)
    np.testing.assert_allclose(other["kl"], terms["kl"], rtol=1e-6)


def test_beta_warmup_and_free_bits_by_hand_at_random_params():
    """loss = mean_b recon + weight * sum_u max(free_bits, mean_b KL_u), weight = beta *
    min(1, step / warmup), with free_bits between the units' KLs so it bites on some only."""
    vae = make_model(Config.create(**TINY), BINARY)
    params = random_params(vae, seed=6)
    keys = example_keys(8, 7)
    batch = prepare(inputs.Preprocessing(BINARY), {"image": binary_images(8)}, keys)
    recon, kl_per_unit = f64(by_hand(vae, params, batch, keys))
    unit_kl = kl_per_unit.mean(0)
    free_bits = float(np.median(unit_kl))
    assert np.sum(unit_kl < free_bits - 0.05) >= 1 and np.sum(unit_kl > free_bits + 0.05) >= 1, unit_kl
    warm = make_model(Config.create(model="vae", beta=3.0, kl_warmup_steps=10, **TINY), BINARY)
    cases = [(vae, 0, 1.0, 0.0),
             (make_model(Config.create(model="beta_vae", beta=4.0, **TINY), BINARY), 0, 4.0, 0.0),
             (warm, 4, 1.2, 0.0),
             (warm, 40, 3.0, 0.0),
             (make_model(Config.create(model="beta_vae", beta=2.0, free_bits=free_bits, **TINY), BINARY), 0, 2.0,
              free_bits)]
    results = losses(tuple((model, step) for model, step, _, _ in cases), params, batch, keys)
    for (model, step, weight, bits), (loss, metrics) in zip(cases, results):
        expected = recon.mean() + weight * np.sum(np.maximum(unit_kl, bits))
        np.testing.assert_allclose(loss, expected, rtol=1e-5, err_msg=str((model, step)))
        np.testing.assert_allclose(metrics["kl_weight"], weight, rtol=1e-6)
        # The logged NELBO, recon and KL are the unweighted ones, whatever the weighting.
        np.testing.assert_allclose(metrics["nelbo"], recon.mean() + kl_per_unit.sum(-1).mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["recon"], recon.mean(), rtol=1e-5)
        np.testing.assert_allclose(metrics["kl"], kl_per_unit.sum(-1).mean(), rtol=1e-5)
        assert float(metrics["loss"]) == float(loss)


def test_elbo_gradient_matches_finite_differences():
    """Directional derivative of the loss, in float64 so central differences are exact enough."""
    with jax.enable_x64(True):
        model = make_model(Config.create(**TINY), BINARY)
        params = f64(random_params(model, seed=1))
        keys = example_keys(4, 2)
        batch = {"x": np.asarray(binary_images(4), np.float64)}
        batch["x_in"] = batch["x"]
        loss_and_grad = jax.jit(jax.value_and_grad(lambda p: model.loss(p, batch, keys)[0]))
        _, grads = loss_and_grad(params)
        rng = np.random.default_rng(3)
        direction = jax.tree.map(lambda g: rng.standard_normal(g.shape), grads)
        eps = 1e-5
        shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)  # noqa: E731
        numeric = (float(loss_and_grad(shift(eps))[0]) - float(loss_and_grad(shift(-eps))[0])) / (2 * eps)
        analytic = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(f64(grads)), jax.tree.leaves(direction)))
        assert abs(analytic) > 1.0
        np.testing.assert_allclose(numeric, analytic, rtol=1e-6)


@functools.partial(jax.jit, static_argnums=0)
def denoising_by_hand(model, params, batch, keys):
    """The network applied to the corrupted x_in; its output scored on the clean x and, for
    contrast, on x_in; the KL per unit, and the posterior of x_in."""
    out, kl_per_unit, _ = model.net.apply({"params": params}, batch["x_in"], noise(keys, model.noise_dim))
    return (-model.likelihood.log_prob(out, batch["x"]), -model.likelihood.log_prob(out, batch["x_in"]), kl_per_unit,
            model.encode(params, batch["x_in"]))


def test_denoising_loss_scores_the_clean_image():
    """--input_noise flip: the encoder sees the corrupted x_in, the likelihood scores the clean x."""
    model = make_model(Config.create(**TINY), BINARY)
    params = random_params(model, seed=8)
    keys = example_keys(8, 9)
    raw = {"image": binary_images(8)}
    preprocessing = inputs.Preprocessing(BINARY, input_noise="flip", noise_level=0.3)
    batch = prepare(preprocessing, raw, keys, True)
    x, x_in = np.asarray(batch["x"]), np.asarray(batch["x_in"])
    np.testing.assert_array_equal(x, np.asarray(raw["image"], np.float32))       # The target is the clean image,
    flipped = x_in != x
    assert 0.2 < flipped.mean() < 0.4, flipped.mean()                            # about 30% of pixels flipped,
    np.testing.assert_array_equal(x_in[flipped], 1.0 - x[flipped])               # each to 1 - x.
    # By hand: the network on the corrupted input, the likelihood on the clean image.
    recon, wrong, kl_per_unit, (mean, logvar) = f64(denoising_by_hand(model, params, batch, keys))
    [(loss, metrics)] = losses(((model, 0),), params, batch, keys)
    np.testing.assert_allclose(loss, recon.mean() + kl_per_unit.mean(0).sum(), rtol=1e-6)
    np.testing.assert_allclose(metrics["recon"], recon.mean(), rtol=1e-6)
    np.testing.assert_allclose(kl_per_unit, dist.gaussian_kl(mean, logvar), rtol=1e-5)
    assert kl_per_unit.min() > 0.01
    # Scoring the corrupted input instead would be a different number.
    assert abs(wrong.mean() - recon.mean()) > 1.0
    # Evaluation (train=False) never corrupts: x_in is x.
    clean = prepare(preprocessing, raw, keys, False)
    np.testing.assert_array_equal(clean["x_in"], x)
    np.testing.assert_array_equal(clean["x"], x)


def test_hflip_flips_half_the_training_images_exactly_and_never_in_evaluation():
    spec = InputSpec(image_shape=(4, 6, 1), num_classes=0, mode="grey")
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (400, 4, 6, 1)), jnp.uint8)
    batch, keys = {"image": images}, example_keys(400, 2)
    x = np.asarray(prepare(inputs.Preprocessing(spec), batch, keys, False)["x"])
    np.testing.assert_allclose(x, np.asarray(images) / 255, rtol=1e-6)
    trained_on = prepare(inputs.Preprocessing(spec, hflip=True), batch, keys, True)
    np.testing.assert_array_equal(trained_on["x_in"], trained_on["x"])   # The flipped image is the data.
    flipped = np.all(trained_on["x"] == x[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(trained_on["x"] == x, axis=(1, 2, 3))
    assert np.all(flipped ^ kept)  # Each image exactly mirrored or exactly unchanged.
    assert 0.43 < flipped.mean() < 0.57
    np.testing.assert_array_equal(prepare(inputs.Preprocessing(spec), batch, keys, True)["x"], x)
    evaluated = prepare(inputs.Preprocessing(spec, hflip=True), batch, keys, False)
    np.testing.assert_array_equal(evaluated["x"], x)
    np.testing.assert_array_equal(evaluated["x_in"], x)
    # The flips are the keys' fold inputs.FLIP_FOLD: the same keys flip the same images.
    again = prepare(inputs.Preprocessing(spec, hflip=True), batch, keys, True)
    np.testing.assert_array_equal(again["x"], trained_on["x"])


def test_cvae_is_conditional_and_its_decoder_depends_on_the_label():
    cvae = make_model(Config.create(model="cvae", **TINY), BINARY)
    assert isinstance(cvae, ConditionalVAE) and cvae.conditional and cvae.name == "cvae"
    assert make_model(Config.create(model="vae", conditional=True, **TINY), BINARY).conditional
    params = random_params(cvae, seed=2)
    decode = jax.jit(cvae.decode)
    z = jnp.zeros((2, 3))
    a = np.asarray(decode(params, z, jnp.array([1, 1])))
    b = np.asarray(decode(params, z, jnp.array([1, 2])))
    np.testing.assert_array_equal(a[0], b[0])
    assert np.max(np.abs(a[1] - b[1])) > 1e-3
    # The label is one-hot input to the encoder too; a conditional model refuses a batch without it.
    np.testing.assert_array_equal(cvae.condition(jnp.array([2])), [[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]])
    keys = example_keys(8, 1)
    batch = prepare(inputs.Preprocessing(BINARY), {"image": binary_images(8), "label": jnp.arange(8) % 10}, keys)
    [(loss, _)] = losses(((cvae, 0),), params, batch, keys)
    recon, kl = f64(by_hand(cvae, params, batch, keys))
    np.testing.assert_allclose(loss, recon.mean() + kl.mean(0).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="needs the batch's labels"):
        cvae.condition(None)
    with pytest.raises(ConfigError, match="needs a labelled dataset"):
        make_model(Config.create(model="cvae", **TINY), InputSpec(SHAPE, 0, "binary"))


def test_family_classes_and_settings():
    assert type(make_model(Config.create(model="beta_vae", beta=2.0, **TINY), BINARY)) is VAE
    model = make_model(Config.create(model="vae", kl_warmup_steps=5, free_bits=0.1, **TINY), BINARY)
    assert (model.beta, model.kl_warmup_steps, model.free_bits) == (1.0, 5, 0.1)
    assert model.bound and not model.deterministic and model.prior_dim == model.latent_dim == model.noise_dim == 3
    with pytest.raises(ConfigError, match="--code_l2 0.5 is not used by --model vae"):
        make_model(Config.create(model="vae", code_l2=0.5, **TINY), BINARY)
