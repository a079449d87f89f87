import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae.config import Config, ConfigError
from jaxae.data import InputSpec
from jaxae.models import make_model

BINARY_28 = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")


@pytest.mark.parametrize("arch,shape,likelihood", [
    ("mlp", (28, 28, 1), "bernoulli"),
    ("conv", (28, 28, 1), "bernoulli"),
    ("conv", (32, 32, 3), "gaussian"),
    ("resnet", (28, 28, 1), "bernoulli"),
    ("resnet", (32, 32, 3), "gaussian"),
    ("conv", (32, 32, 3), "logistic_mixture"),
    ("mlp_flax", (28, 28, 1), "bernoulli"),
])
def test_shapes(arch, shape, likelihood):
    config = Config(arch=arch, likelihood=likelihood, latent_dim=7,
                    binarize="dynamic" if likelihood == "bernoulli" else "none")
    mode = {"bernoulli": "binary", "gaussian": "dequantize", "logistic_mixture": "grey"}[likelihood]
    spec = InputSpec(image_shape=shape, num_classes=10, mode=mode)
    model = make_model(config, spec)
    params = model.init(jax.random.key(0))
    images = jnp.zeros((5, *shape), jnp.uint8)
    keys = jax.random.split(jax.random.key(1), 5)
    terms = model.per_example(params, {"image": images}, keys)
    assert {k: v.shape for k, v in terms.items()} == {"nelbo": (5,), "recon": (5,), "kl": (5,)}
    mean, logvar = model.encode(params, images)
    assert mean.shape == logvar.shape == (5, 7)
    decoded = model.decode_mean(params, jnp.zeros((3, 7)))
    assert decoded.shape == (3, *shape) and decoded.dtype == jnp.float32
    assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0


def test_negative_elbo_by_hand():
    """Zero weights: q(z|x) = N(m, e^v) from the encoder's output bias, logits 0 everywhere."""
    model = make_model(Config(latent_dim=2, hidden_dims=(8,)), BINARY_28)
    params = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))
    m, v = np.array([0.3, -1.0]), np.array([0.5, -0.2])
    last = params["encoder"]["Dense_1"]
    params["encoder"]["Dense_1"] = dict(last, bias=jnp.asarray(np.concatenate([m, v]), jnp.float32))
    images = jnp.ones((3, 28, 28, 1), jnp.uint8)
    terms = model.per_example(params, {"image": images}, jax.random.split(jax.random.key(2), 3))
    recon = 784 * math.log(2.0)  # Every pixel has probability 1/2 whatever z is.
    kl = 0.5 * float(np.sum(np.exp(v) + m * m - 1.0 - v))
    np.testing.assert_allclose(terms["recon"], recon, rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-6)
    np.testing.assert_allclose(terms["nelbo"], recon + kl, rtol=1e-6)
    loss, metrics = model.loss(params, {"image": images}, jax.random.split(jax.random.key(2), 3))
    np.testing.assert_allclose(loss, recon + kl, rtol=1e-6)


def test_elbo_gradient_matches_finite_differences():
    """Directional derivative of the loss, in float64 so central differences are exact enough."""
    with jax.enable_x64(True):
        model = make_model(Config(latent_dim=3, hidden_dims=(16,)), BINARY_28)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), model.init(jax.random.key(0)))
        images = jax.random.bernoulli(jax.random.key(1), 0.3, (4, 28, 28, 1)).astype(jnp.uint8)
        keys = jax.random.split(jax.random.key(2), 4)
        loss = lambda p: model.loss(p, {"image": images}, keys)[0]  # noqa: E731
        grads = jax.grad(loss)(params)
        direction = jax.tree.map(lambda g: jax.random.normal(jax.random.key(3), g.shape, jnp.float64), grads)
        eps = 1e-5
        shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)  # noqa: E731
        numeric = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
        assert abs(float(analytic)) > 1.0
        np.testing.assert_allclose(numeric, analytic, rtol=1e-4)


def test_conv_rejects_indivisible_image_sides():
    spec = InputSpec(image_shape=(30, 30, 1), num_classes=0, mode="binary")
    with pytest.raises(ConfigError, match="divisible by 4"):
        make_model(Config(arch="conv"), spec)


def test_mlp_presets_fix_widths_and_activation():
    model = make_model(Config(arch="mlp_burda", hidden_dims=(7,), latent_dim=50), BINARY_28)
    params = model.init(jax.random.key(0))
    assert params["encoder"]["Dense_0"]["kernel"].shape == (784, 200)
    assert params["encoder"]["Dense_1"]["kernel"].shape == (200, 200)
    assert model.net.encoder.activation == "tanh"
    two = make_model(Config(arch="mlp_burda", stochastic_layers=2, latent_dim=100, top_latent_dim=50), BINARY_28)
    params = two.init(jax.random.key(0))
    assert params["z_encoder"]["Dense_0"]["kernel"].shape == (100, 100)
    assert params["z_encoder"]["Dense_2"]["kernel"].shape == (100, 2 * 50)
    flax_sizes = make_model(Config(arch="mlp_flax", latent_dim=20), BINARY_28).init(jax.random.key(0))
    assert flax_sizes["decoder"]["Dense_0"]["kernel"].shape == (20, 500)


def test_upsample2x_is_depth_to_space():
    from jaxae.nets.conv import upsample2x

    x = jnp.arange(2 * 3 * 3 * 8, dtype=jnp.float32).reshape(2, 3, 3, 8)
    y = upsample2x(x)
    assert y.shape == (2, 6, 6, 2)
    # Output pixel (2i + a, 2j + b) channel c comes from input (i, j) channel (a * 2 + b) * 2 + c.
    for i, j, a, b, c in ((0, 0, 0, 0, 0), (1, 2, 1, 0, 1), (2, 1, 1, 1, 0)):
        assert y[1, 2 * i + a, 2 * j + b, c] == x[1, i, j, (a * 2 + b) * 2 + c]


def test_hflip_flips_half_the_training_images_exactly_and_never_in_evaluation():
    spec = InputSpec(image_shape=(4, 6, 1), num_classes=0, mode="grey")
    config = Config(latent_dim=2, hidden_dims=(8,), binarize="none", hflip=True)
    model, plain = make_model(config, spec), make_model(config.replace(hflip=False), spec)
    params = model.init(jax.random.key(0))
    images = jax.random.randint(jax.random.key(1), (400, 4, 6, 1), 0, 256).astype(jnp.uint8)
    batch, keys = {"image": images}, jax.random.split(jax.random.key(2), 400)
    x = model.model_input(images, keys)
    trained_on = model._terms(params, batch, keys, noisy=True)["x"]
    flipped = np.all(trained_on == x[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(trained_on == x, axis=(1, 2, 3))
    assert np.all(flipped ^ kept)  # Each image exactly mirrored or exactly unchanged.
    assert 0.43 < flipped.mean() < 0.57
    np.testing.assert_array_equal(plain._terms(params, batch, keys, noisy=True)["x"], x)
    for name, value in model.per_example(params, batch, keys).items():
        np.testing.assert_array_equal(value, plain.per_example(params, batch, keys)[name])
