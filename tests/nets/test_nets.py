"""Building the flat networks (jaxae.nets: encoder_decoder, presets, upsample2x) and the math of
the one- and two-stochastic-layer networks (jaxae.nets.stochastic) by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import nets
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.nets import MLPDecoder, MLPEncoder, OneLayerNet, TwoLayerNet
from jaxae.nets.conv import down_conv, upsample2x

BINARY_28 = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")
LOG_2PI = math.log(2 * math.pi)


@pytest.mark.parametrize("arch,shape,likelihood,out_channels", [
    ("mlp", (28, 28, 1), "bernoulli", 1),
    ("conv", (28, 28, 1), "bernoulli", 1),
    ("conv", (32, 32, 3), "gaussian", 6),
    ("resnet", (28, 28, 1), "bernoulli", 1),
    ("resnet", (32, 32, 3), "gaussian", 6),
    ("conv", (32, 32, 3), "logistic_mixture", 100),
    ("mlp_flax", (28, 28, 1), "bernoulli", 1),
])
def test_shapes(arch, shape, likelihood, out_channels):
    """Every network through its family, traced (jax.eval_shape: shapes and dtypes, nothing run)."""
    config = Config.create(arch=arch, likelihood=likelihood, latent_dim=7,
                           binarize="dynamic" if likelihood == "bernoulli" else "none")
    mode = {"bernoulli": "binary", "gaussian": "dequantize", "logistic_mixture": "grey"}[likelihood]
    model = make_model(config, InputSpec(image_shape=shape, num_classes=10, mode=mode))
    assert model.convolutional == (arch in ("conv", "resnet"))
    params = jax.eval_shape(model.init, jax.random.key(0))
    batch = {"x": jnp.zeros((5, *shape)), "x_in": jnp.zeros((5, *shape))}
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(1), 5))
    terms = jax.eval_shape(model.eval_terms, params, batch, keys)
    assert {k: v.shape for k, v in terms.items()} == {"nelbo": (5,), "recon": (5,), "kl": (5,), "kl_per_unit": (5, 7)}
    assert all(v.dtype == jnp.float32 for v in terms.values())
    out, _, code = jax.eval_shape(model.net.apply, {"params": params}, batch["x_in"], jnp.zeros((5, 7)))
    assert out.shape == (5, *shape[:2], out_channels) and code.shape == (5, 7)
    mean, logvar = jax.eval_shape(model.encode, params, batch["x"])
    assert mean.shape == logvar.shape == (5, 7)
    decoded = jax.eval_shape(model.decode, params, jnp.zeros((3, 7)))
    assert decoded.shape == (3, *shape) and decoded.dtype == jnp.float32


def test_encoder_decoder_kinds_and_indivisible_sides():
    encoder, decoder = nets.encoder_decoder("mlp", (6, 6, 1), 2, 3, hidden_dims=(8, 4), activation="tanh")
    assert encoder == MLPEncoder((8, 4), 3, "tanh", None) and decoder == MLPDecoder((4, 8), (6, 6, 2), "tanh", None)
    encoder, decoder = nets.encoder_decoder("resnet", (8, 8, 3), 6, 5, channels=(4, 8), dtype="bfloat16")
    assert encoder.residual and decoder.residual and encoder.channels == (4, 8) and decoder.channels == (8, 4)
    assert encoder.dtype == decoder.dtype == jnp.bfloat16 and decoder.out_shape == (8, 8, 6)
    assert nets.compute_dtype("float32") is None and nets.compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(ConfigError, match="divisible by 4"):
        nets.encoder_decoder("conv", (30, 30, 1), 1, 2, channels=(4, 8))
    with pytest.raises(ConfigError, match="divisible by 4"):
        make_model(Config.create(arch="conv"), InputSpec(image_shape=(30, 30, 1), num_classes=0, mode="binary"))


def test_mlp_presets_fix_widths_and_activation():
    shapes = lambda model: jax.eval_shape(model.init, jax.random.key(0))  # noqa: E731
    model = make_model(Config.create(arch="mlp_burda", hidden_dims=(7,), latent_dim=50), BINARY_28)
    params = shapes(model)
    assert params["encoder"]["Dense_0"]["kernel"].shape == (784, 200)
    assert params["encoder"]["Dense_1"]["kernel"].shape == (200, 200)
    assert params["encoder"]["Dense_2"]["kernel"].shape == (200, 100)
    assert model.net.encoder.activation == "tanh"
    two = make_model(Config.create(arch="mlp_burda", stochastic_layers=2, latent_dim=100, top_latent_dim=50),
                     BINARY_28)
    params = shapes(two)
    assert params["z_encoder"]["Dense_0"]["kernel"].shape == (100, 100)
    assert params["z_encoder"]["Dense_2"]["kernel"].shape == (100, 2 * 50)
    assert params["z_decoder"]["Dense_2"]["kernel"].shape == (100, 2 * 100)
    flax_sizes = shapes(make_model(Config.create(arch="mlp_flax", latent_dim=20), BINARY_28))
    assert flax_sizes["decoder"]["Dense_0"]["kernel"].shape == (20, 500)
    assert make_model(Config.create(arch="mlp_flax"), BINARY_28).net.encoder.activation == "relu"


def test_upsample2x_is_depth_to_space():
    x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
    y = np.asarray(upsample2x(jnp.asarray(x)))
    assert y.shape == (2, 6, 6, 2)
    # Output pixel (2i + a, 2j + b) channel c comes from input (i, j) channel (a * 2 + b) * 2 + c.
    for n in range(2):
        for i in range(3):
            for j in range(3):
                for a in range(2):
                    for b in range(2):
                        np.testing.assert_array_equal(y[n, 2 * i + a, 2 * j + b], x[n, i, j, (a * 2 + b) * 2:][:2])


# --- the stochastic layers by hand --------------------------------------------------------------

def random_params(init, *example_args, seed: int):
    """Parameters of the shapes init gives (traced only), seeded normal: kernels std 1/sqrt(fan_in), biases std 0.5."""
    shapes = jax.eval_shape(init, jax.random.key(0), *example_args)["params"]
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(seed)
    return treedef.unflatten([jnp.asarray((1 / math.sqrt(math.prod(leaf.shape[:-1])) if path[-1].key == "kernel"
                                           else 0.5) * rng.standard_normal(leaf.shape), jnp.float32)
                              for path, leaf in flat])


def np_log_normal(z, mean, logvar):
    """log N(z; mean, diag e^logvar) summed over the last axis, float64."""
    z, mean, logvar = (np.asarray(a, np.float64) for a in (z, mean, logvar))
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mean) ** 2 / np.exp(logvar), axis=-1)


def np_kl(mean, logvar):
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar)


def test_one_layer_net_by_hand():
    encoder, decoder = MLPEncoder((8,), 3), MLPDecoder((8,), (2, 2, 1))
    net = OneLayerNet(encoder=encoder, decoder=decoder)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 2, 2, 1)), jnp.float32)
    eps, samples = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((2, 3), (2, 4, 3)))
    params = random_params(net.init, x, eps, seed=1)

    @jax.jit
    def run(params):
        by_net = net.apply({"params": params}, x, eps), net.apply({"params": params}, x, samples,
                                                                  method=OneLayerNet.sample_and_score)
        mean, logvar = encoder.apply({"params": params["encoder"]}, x)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * samples
        return by_net, (mean, logvar, decoder.apply({"params": params["decoder"]}, mean + jnp.exp(0.5 * logvar) * eps),
                        z, decoder.apply({"params": params["decoder"]}, z.reshape(8, 3)))

    ((out, kl, code), (outs, log_ratio)), (mean, logvar, expected_out, z, expected_outs) = run(params)
    np.testing.assert_allclose(out, expected_out, rtol=1e-6)
    np.testing.assert_allclose(code, mean)
    np.testing.assert_allclose(kl, np_kl(mean, logvar), rtol=1e-5)
    assert np.asarray(kl).sum(-1).min() > 0.1
    np.testing.assert_allclose(outs, np.asarray(expected_outs).reshape(2, 4, 2, 2, 1), rtol=1e-6)
    expected_ratio = np_log_normal(z, 0.0, 0.0) - np_log_normal(z, np.asarray(mean)[:, None],
                                                                 np.asarray(logvar)[:, None])
    np.testing.assert_allclose(log_ratio, expected_ratio, rtol=1e-5, atol=1e-5)


def test_two_layer_net_by_hand():
    """q(z1|x) q(z2|z1), p(z2) = N(0, I), p(z1|z2), p(x|z1): the training pass's KL per unit is
    [log q(z1|x) - log p(z1|z2) per dim of z1 (one sample), KL(q(z2|z1) || N(0, I)) per dim of
    z2]; the scoring pass's log-ratio is log p(z2) + log p(z1|z2) - log q(z2|z1) - log q(z1|x)."""
    x_encoder, z_encoder, z_decoder, x_decoder = (MLPEncoder((8,), 4), MLPEncoder((6,), 2), MLPEncoder((6,), 4),
                                                  MLPDecoder((8,), (2, 2, 1)))
    net = TwoLayerNet(x_encoder=x_encoder, z_encoder=z_encoder, z_decoder=z_decoder, x_decoder=x_decoder,
                      bottom_dim=4)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.random((2, 2, 2, 1)), jnp.float32)
    eps, samples = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((2, 6), (2, 3, 6)))
    params = random_params(net.init, x, eps, seed=3)

    @jax.jit
    def run(params):
        sub = lambda name, module, *args: module.apply({"params": params[name]}, *args)  # noqa: E731

        def by_hand(e):                                   # e (B, 6) -> every layer's numbers
            m1, lv1 = sub("x_encoder", x_encoder, x)
            z1 = m1 + jnp.exp(0.5 * lv1) * e[:, :4]
            m2, lv2 = sub("z_encoder", z_encoder, z1)
            z2 = m2 + jnp.exp(0.5 * lv2) * e[:, 4:]
            pm1, plv1 = sub("z_decoder", z_decoder, z2)
            return (m1, lv1, z1, m2, lv2, z2, pm1, plv1), sub("x_decoder", x_decoder, z1)

        return (net.apply({"params": params}, x, eps),
                net.apply({"params": params}, x, samples, method=TwoLayerNet.sample_and_score),
                by_hand(eps), jax.vmap(by_hand, in_axes=1, out_axes=1)(samples))

    (out, kl, code), (outs, log_ratio), (layers, expected_out), (layers_s, expected_outs) = run(params)
    m1, lv1, z1, m2, lv2, z2, pm1, plv1 = (np.asarray(a, np.float64) for a in layers)
    np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(code, m2, rtol=1e-6)
    kl1 = (-0.5 * (LOG_2PI + lv1 + (z1 - m1) ** 2 / np.exp(lv1))) - (-0.5 * (LOG_2PI + plv1 + (z1 - pm1) ** 2
                                                                             / np.exp(plv1)))
    np.testing.assert_allclose(kl, np.concatenate([kl1, np_kl(m2, lv2)], -1), rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(kl1.sum(-1)) > 0.1) and np.all(np_kl(m2, lv2).sum(-1) > 0.1)
    m1, lv1, z1, m2, lv2, z2, pm1, plv1 = (np.asarray(a, np.float64) for a in layers_s)   # (B, S, D)
    expected_ratio = (np_log_normal(z2, 0.0, 0.0) + np_log_normal(z1, pm1, plv1) - np_log_normal(z2, m2, lv2)
                      - np_log_normal(z1, m1, lv1))
    np.testing.assert_allclose(log_ratio, expected_ratio, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outs, expected_outs, rtol=1e-5, atol=1e-6)
    # Decoding a code z2 goes through p(z1|z2)'s mean.
    z = jnp.asarray(rng.standard_normal((2, 2)), jnp.float32)
    pm1 = z_decoder.apply({"params": params["z_decoder"]}, z)[0]
    np.testing.assert_allclose(net.apply({"params": params}, z, method=TwoLayerNet.decode),
                               x_decoder.apply({"params": params["x_decoder"]}, pm1), rtol=1e-5, atol=1e-6)


def _plain_conv(x, kernel, strides=(2, 2)):
    return jax.lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _nn_conv_dims():
    return jax.lax.conv_dimension_numbers((1, 4, 4, 1), (4, 4, 1, 1), ("NHWC", "HWIO", "NHWC"))


def test_down_conv_is_the_strided_conv_with_its_gradients():
    """The encoder's 4x4 stride-2 conv: the same output and the same input and kernel
    gradients as XLA's conv (its input gradient computed by the 3x3 phase kernel on CPU), on
    a non-square image with different in and out channels; every tap of the kernel counts."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 6, 3)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((4, 4, 3, 5)), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((2, 4, 3, 5)), jnp.float32)
    dims = _nn_conv_dims()
    ours = lambda x, k: down_conv(x, k, (2, 2), "SAME", dimension_numbers=dims)  # noqa: E731
    out, vjp = jax.vjp(jax.jit(ours), x, kernel)
    want, want_vjp = jax.vjp(_plain_conv, x, kernel)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(vjp(cotangent), want_vjp(cotangent)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # By hand, one input pixel: x[0, 2, 3] (row 2i + 0, column 2j + 1 with i = j = 1) meets
    # output rows i, i - 1 through taps 1, 3 and output columns j + 1, j through taps 0, 2.
    dx = vjp(cotangent)[0]
    hand = sum(cotangent[0, i_out, j_out] @ kernel[ky, kx].T
               for i_out, ky in ((1, 1), (0, 3)) for j_out, kx in ((2, 0), (1, 2)))
    np.testing.assert_allclose(dx[0, 2, 3], hand, rtol=1e-5, atol=1e-5)
    # Other convolutions pass through to XLA's unchanged.
    odd = jnp.ones((1, 7, 7, 3))
    np.testing.assert_allclose(down_conv(odd, kernel, (2, 2), "SAME", dimension_numbers=dims),
                               _plain_conv(odd, kernel), rtol=1e-6)
    assert "custom_vjp" in str(jax.make_jaxpr(ours)(x, kernel))
    assert "custom_vjp" not in str(jax.make_jaxpr(lambda o: down_conv(o, kernel, (2, 2), "SAME",
                                                                      dimension_numbers=dims))(odd))
