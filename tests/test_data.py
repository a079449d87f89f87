import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import data
from jaxae.config import Config, ConfigError
from jaxae.datasets import mnist_5k


def test_mnist_5k_is_real_digits_with_a_fixed_balanced_split(mnist5k):
    builder, train, test = mnist5k
    assert builder.name == "mnist_5k"
    assert train.images.shape == (4500, 28, 28, 1) and test.images.shape == (500, 28, 28, 1)
    assert train.images.dtype == np.uint8 and int(train.images.max()) == 255
    assert np.bincount(train.labels).tolist() == [450] * 10
    assert np.bincount(test.labels).tolist() == [50] * 10
    # The split matches the source file: the test set is each class's last 50 rows.
    images, labels = mnist_5k.read_source()
    idx = mnist_5k.split_indices(labels)
    source = {row.tobytes() for row in images[idx["test"]]}
    assert {row.tobytes() for row in test.images} == source
    # Real digits: ink covers roughly a fifth of the image, centred.
    ink = (train.images > 127).mean()
    assert 0.08 < ink < 0.3
    centre = (train.images[:, 8:20, 8:20] > 127).mean()
    assert centre > 2 * ink


def test_input_spec_modes(mnist5k):
    builder, train, _ = mnist5k
    assert data.input_spec(Config(), builder, train).mode == "dynamic"
    assert data.input_spec(Config(binarize="none"), builder, train).mode == "grey"
    spec = data.input_spec(Config(binarize="none", likelihood="gaussian"), builder, train)
    assert spec.mode == "dequantize" and spec.image_shape == (28, 28, 1) and spec.num_classes == 10


def test_to_model_input():
    images = jnp.array([[0, 255], [128, 64]], jnp.uint8).reshape(1, 2, 2, 1).repeat(3, axis=0)
    keys = jax.random.split(jax.random.key(0), 3)
    spec = lambda mode: data.InputSpec((2, 2, 1), 0, mode)  # noqa: E731
    np.testing.assert_allclose(data.to_model_input(images, keys, spec("grey")), images / 255.0)
    binary = data.to_model_input(images, keys, spec("dynamic"))
    assert set(np.unique(binary).tolist()) <= {0.0, 1.0}
    assert np.all(binary[:, 0, 0] == 0) and np.all(binary[:, 0, 1] == 1)
    deq = data.to_model_input(images, keys, spec("dequantize"))
    assert np.all(deq >= images / 256.0) and np.all(deq < (images.astype(np.float32) + 1) / 256.0)


def test_dynamic_binarization_has_the_right_mean():
    images = jnp.full((2000, 28, 28, 1), 64, jnp.uint8)
    keys = jax.random.split(jax.random.key(0), 2000)
    x = data.to_model_input(images, keys, data.InputSpec((28, 28, 1), 0, "dynamic"))
    np.testing.assert_allclose(float(x.mean()), 64 / 255, atol=2e-3)


def test_epoch_permutations_are_permutations_that_change_each_epoch():
    key = jax.random.key(3)
    p0, p1 = data.epoch_permutation(key, 0, 100), data.epoch_permutation(key, 1, 100)
    assert sorted(np.asarray(p0).tolist()) == list(range(100))
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p0, data.epoch_permutation(key, 0, 100))


def test_example_keys_depend_on_global_index_only():
    rng = jax.random.key(0)
    whole = jax.random.key_data(data.example_keys(rng, 8))
    second_half = jax.random.key_data(data.example_keys(rng, 4, offset=4))
    np.testing.assert_array_equal(whole[4:], second_half)


def test_unknown_dataset_and_split_are_clear_errors(tfds_dir, mnist5k):
    with pytest.raises(ConfigError, match="'no_such_set' is not a TFDS dataset"):
        data.prepared_builder(Config(dataset="no_such_set", data_dir=tfds_dir))
    with pytest.raises(ConfigError, match="split 'validation' is not in 'mnist_5k'"):
        data.load_split(mnist5k[0], "validation")
