"""Sampling sharded over the 4 fake devices gives the images one device gives."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxae import distributed, priors, sampling
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families import make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")


def test_prior_samples_and_reconstructions_sharded_over_4_devices_match_one_device():
    assert jax.device_count() >= 4, "conftest sets 4 fake CPU devices"
    model = make_model(Config.create(hidden_dims=(32,), latent_dim=6), SPEC)
    rng = np.random.default_rng(0)    # random params of model.init's shapes (traced only)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
                          jax.eval_shape(model.init, jax.random.key(0)))
    sharding = distributed.batch_sharding(8, jax.devices()[:4])
    placed = distributed.put(params, distributed.replicated(sharding))
    single = sampling.sample_prior(model, params, jax.random.key(1), 8, 0.9)
    sharded = sampling.sample_prior(model, placed, jax.random.key(1), 8, 0.9, sharding=sharding)
    assert sharded.sharding.spec == PartitionSpec("data") and len(sharded.sharding.device_set) == 4
    assert {shard.data.shape for shard in sharded.addressable_shards} == {(2, 28, 28, 1)}
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-5, atol=1e-6)
    # The samples are the decoded means of z ~ N(0, 0.9^2 I) drawn from the key.
    z = 0.9 * jax.random.normal(jax.random.key(1), (8, 6))
    np.testing.assert_allclose(np.asarray(single), jax.jit(model.decode)(params, z), rtol=1e-5, atol=1e-6)
    images = jnp.asarray(np.random.default_rng(2).random((8, 28, 28, 1)) < 0.3, jnp.uint8) * 255
    recons = sampling.reconstruct(model, placed, distributed.put(images, sharding))
    assert len(recons.sharding.device_set) == 4
    single = np.asarray(sampling.reconstruct(model, params, images))
    np.testing.assert_allclose(np.asarray(recons), single, rtol=1e-5, atol=1e-6)
    # Reconstructions decode the posterior mean of the images' grey levels (no binarization).
    np.testing.assert_allclose(sampling.encode(model, params, images), jax.jit(model.encode)(params, images / 255.0)[0],
                               rtol=1e-5, atol=1e-6)


def _model_and_params(latent_dim=6):
    model = make_model(Config.create(hidden_dims=(32,), latent_dim=latent_dim), SPEC)
    rng = np.random.default_rng(0)    # random params of model.init's shapes (traced only)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
                          jax.eval_shape(model.init, jax.random.key(0)))
    return model, params


def _images(num):
    return jnp.asarray(np.random.default_rng(3).random((num, 28, 28, 1)) < 0.3, jnp.uint8) * 255


def test_sample_prior_scales_the_fitted_prior_by_the_temperature():
    model, params = _model_and_params()
    rng = np.random.default_rng(1)
    chols = np.tril(rng.standard_normal((2, 6, 6))) + 2.0 * np.eye(6)
    prior = priors.FittedPrior(np.array([0.3, 0.7]), rng.standard_normal((2, 6)), chols)
    key = jax.random.key(4)
    images = np.asarray(sampling.sample_prior(model, params, key, 8, 0.5, prior=prior))
    decode = jax.jit(model.decode)
    np.testing.assert_allclose(images, decode(params, priors.sample(prior, key, 8, 0.5)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(images, decode(params, priors.sample(prior, key, 8, 1.0)), atol=1e-3)


def test_interpolate_decodes_evenly_spaced_codes_from_the_first_image_to_the_second():
    model, params = _model_and_params()
    images = _images(2)
    c0, c1 = np.asarray(sampling.encode(model, params, images))
    frames = sampling.interpolate(model, params, images, None, 5)
    z = np.stack([c0, 0.75 * c0 + 0.25 * c1, 0.5 * (c0 + c1), 0.25 * c0 + 0.75 * c1, c1])
    np.testing.assert_allclose(frames, jax.jit(model.decode)(params, jnp.asarray(z)), rtol=1e-5, atol=1e-6)


def test_traverse_varies_dim_d_in_row_d_from_minus_to_plus_radius():
    model, params = _model_and_params()
    image = _images(1)
    code = np.asarray(sampling.encode(model, params, image))[0]
    frames = sampling.traverse(model, params, image, None, 3, 4, radius=2.0)
    z = np.stack([code + offset * np.eye(6)[d] for d in range(3) for offset in (-2.0, -2.0 / 3, 2.0 / 3, 2.0)])
    np.testing.assert_allclose(frames, jax.jit(model.decode)(params, jnp.asarray(z, jnp.float32)),
                               rtol=1e-5, atol=1e-6)


def test_interleave_rows_puts_each_row_of_inputs_above_its_outputs():
    inputs = jnp.arange(6.0).reshape(6, 1, 1, 1)
    rows = sampling.interleave_rows(inputs, inputs + 10.0, num_cols=3)
    np.testing.assert_array_equal(rows.ravel(), [0, 1, 2, 10, 11, 12, 3, 4, 5, 13, 14, 15])


def test_reconstructions_decode_every_stochastic_layer_at_its_posterior_mean():
    """One layer: decode(encode(x) mean). Two layers: p(x|z1) at z1 = q(z1|x)'s mean, read off
    the bottom encoder itself, not the top code decoded through p(z1|z2) (which loses x)."""
    images = _images(4)
    x = images / 255.0
    model, params = _model_and_params()
    np.testing.assert_allclose(sampling.reconstruct(model, params, images),
                               jax.jit(model.decode)(params, model.encode(params, x)[0]), rtol=1e-5, atol=1e-6)
    two = make_model(Config.create(hidden_dims=(32,), latent_dim=6, stochastic_layers=2, top_latent_dim=3), SPEC)
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
                          jax.eval_shape(two.init, jax.random.key(0)))
    bottom = two.net.apply({"params": params}, x, method=lambda net, x: net.x_decoder(net.x_encoder(x)[0]))
    got = np.asarray(sampling.reconstruct(two, params, images))
    np.testing.assert_allclose(got, jax.nn.sigmoid(bottom), rtol=1e-5, atol=1e-6)
    through_top = np.asarray(two.decode(params, two.encode(params, x)[0]))
    assert np.abs(got - through_top).mean() > 0.01
