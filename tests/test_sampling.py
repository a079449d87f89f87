"""Sampling sharded over the 4 fake devices gives the images one device gives."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxae import distributed, sampling
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
