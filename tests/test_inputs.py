"""Device-side input processing (jaxae.inputs): uint8 images to model input, corruption,
augmentation, per-example keys and their folds, the epoch order, and Preprocessing in
training and in evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import inputs
from jaxae.data import InputSpec


def _spec(mode, shape=(2, 2, 1), num_classes=0):
    return InputSpec(shape, num_classes, mode)


def _key_data(keys):
    return np.asarray(jax.random.key_data(keys))


IMAGES = jnp.array([[0, 255], [128, 64]], jnp.uint8).reshape(1, 2, 2, 1).repeat(3, axis=0)
KEYS = jax.random.split(jax.random.key(0), 3)


def test_to_model_input_modes():
    np.testing.assert_array_equal(inputs.to_model_input(IMAGES, KEYS, _spec("grey")),
                                  np.asarray(IMAGES, np.float32) / 255.0)
    binary_images = (IMAGES > 100).astype(jnp.uint8)
    np.testing.assert_array_equal(inputs.to_model_input(binary_images, KEYS, _spec("binary")), binary_images)
    binary = inputs.to_model_input(IMAGES, KEYS, _spec("dynamic"))
    assert binary.dtype == jnp.float32 and set(np.unique(binary).tolist()) <= {0.0, 1.0}
    assert np.all(binary[:, 0, 0] == 0) and np.all(binary[:, 0, 1] == 1)  # Grey 0 and 255 are certain.
    for i in range(3):  # Each example's draw is Bernoulli(k / 255) with its own key.
        np.testing.assert_array_equal(binary[i], jax.random.bernoulli(KEYS[i], IMAGES[i] / 255.0))
    deq = inputs.to_model_input(IMAGES, KEYS, _spec("dequantize"))
    for i in range(3):  # (k + u) / 256, u ~ U[0, 1) from the example's key.
        np.testing.assert_allclose(deq[i], (IMAGES[i] + jax.random.uniform(KEYS[i], (2, 2, 1))) / 256.0, rtol=1e-6)
    assert np.all(deq >= IMAGES / 256.0) and np.all(deq < (IMAGES.astype(np.float32) + 1) / 256.0)
    with pytest.raises(ValueError, match="input mode 'fancy' must be one of binary, dynamic, grey, dequantize"):
        _spec("fancy")  # InputSpec refuses it, so to_model_input never sees one.


def test_dynamic_binarization_has_the_right_mean():
    images = jnp.full((2000, 28, 28, 1), 64, jnp.uint8)
    keys = jax.random.split(jax.random.key(0), 2000)
    x = inputs.to_model_input(images, keys, _spec("dynamic", (28, 28, 1)))
    np.testing.assert_allclose(float(x.mean()), 64 / 255, atol=2e-3)


def test_scaled_has_no_randomness():
    np.testing.assert_array_equal(inputs.scaled(IMAGES, _spec("dynamic")), np.asarray(IMAGES, np.float32) / 255)
    np.testing.assert_array_equal(inputs.scaled(IMAGES, _spec("dequantize")), np.asarray(IMAGES, np.float32) / 255)
    ones = jnp.ones((1, 2, 2, 1), jnp.uint8)
    np.testing.assert_array_equal(inputs.scaled(ones, _spec("binary")), np.ones((1, 2, 2, 1)))


def test_corrupt():
    x = jnp.array([[0.0, 1.0], [0.25, 0.5]]).reshape(1, 2, 2, 1).repeat(3, axis=0)
    np.testing.assert_array_equal(inputs.corrupt(x, KEYS, "none", 0.0), x)
    np.testing.assert_array_equal(inputs.corrupt(x, KEYS, "flip", 1.0), 1.0 - x)  # Every pixel flips.
    np.testing.assert_array_equal(inputs.corrupt(x, KEYS, "mask", 1.0), np.zeros_like(x))  # Every pixel masked.
    np.testing.assert_array_equal(inputs.corrupt(x, KEYS, "flip", 0.0), x)
    np.testing.assert_array_equal(inputs.corrupt(x, KEYS, "mask", 0.0), x)
    noisy = inputs.corrupt(x, KEYS, "gaussian", 0.3)
    for i in range(3):
        expected = np.clip(x[i] + 0.3 * jax.random.normal(KEYS[i], (2, 2, 1)), 0.0, 1.0)
        np.testing.assert_allclose(noisy[i], expected, rtol=1e-6)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    # Half-probability flips: each example's own key decides its pixels.
    half = inputs.corrupt(x, KEYS, "flip", 0.5)
    for i in range(3):
        hit = jax.random.bernoulli(KEYS[i], 0.5, (2, 2, 1))
        np.testing.assert_array_equal(half[i], np.where(hit, 1.0 - x[i], x[i]))
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        inputs.corrupt(x, KEYS, "blur", 0.5)


def test_random_hflip_flips_each_example_by_its_own_key():
    x = jnp.arange(16 * 2 * 3, dtype=jnp.float32).reshape(16, 2, 3, 1)
    keys = jax.random.split(jax.random.key(1), 16)
    out = inputs.random_hflip(x, keys)
    flipped = np.asarray([bool(jax.random.bernoulli(k)) for k in keys])  # Probability 1/2 each.
    assert 0 < flipped.sum() < 16
    for i in range(16):
        np.testing.assert_array_equal(out[i], x[i, :, ::-1] if flipped[i] else x[i])


def test_example_keys_depend_on_global_index_only():
    rng = jax.random.key(0)
    whole = _key_data(inputs.example_keys(rng, 8))
    for i in range(8):
        np.testing.assert_array_equal(whole[i], _key_data(jax.random.fold_in(rng, i)))
    np.testing.assert_array_equal(whole[4:], _key_data(inputs.example_keys(rng, 4, offset=4)))


def test_example_keys_under_pmap_match_one_device():
    """Each of 4 devices holds rows [2d, 2d + 2) of the global batch of 8, and their keys."""
    rng = jax.random.key(3)
    per_device = jax.pmap(lambda r, _: jax.random.key_data(inputs.example_keys(r, 2, axis_name="i")),
                          axis_name="i", in_axes=(None, 0), devices=jax.devices()[:4])(rng, jnp.arange(4))
    np.testing.assert_array_equal(np.asarray(per_device).reshape(8, -1),
                                  _key_data(inputs.example_keys(rng, 8)).reshape(8, -1))


def test_fold_folds_each_key():
    folded = _key_data(inputs.fold(KEYS, 2))
    for i in range(3):
        np.testing.assert_array_equal(folded[i], _key_data(jax.random.fold_in(KEYS[i], 2)))
    assert (inputs.INPUT_FOLD, inputs.MODEL_FOLD, inputs.CORRUPTION_FOLD, inputs.FLIP_FOLD) == (0, 1, 2, 3)


def test_epoch_permutations_are_permutations_that_change_each_epoch():
    key = jax.random.key(3)
    p0, p1 = inputs.epoch_permutation(key, 0, 100), inputs.epoch_permutation(key, 1, 100)
    assert sorted(np.asarray(p0).tolist()) == list(range(100))
    assert sorted(np.asarray(p1).tolist()) == list(range(100))
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p0, inputs.epoch_permutation(key, 0, 100))
    np.testing.assert_array_equal(p1, jax.random.permutation(jax.random.fold_in(key, 1), 100))
    np.testing.assert_array_equal(p1, jax.jit(inputs.epoch_permutation, static_argnums=2)(key, jnp.int32(1), 100))


def test_eval_key_is_fixed():
    np.testing.assert_array_equal(_key_data(inputs.eval_key()), _key_data(jax.random.key(20111125)))


# --- Preprocessing ---

SPEC = InputSpec((6, 6, 1), 10, "dynamic")


def _batch():
    images = jax.random.randint(jax.random.key(2), (16, 6, 6, 1), 0, 256).astype(jnp.uint8)
    return {"image": images, "label": jnp.arange(16) % 10}, jax.random.split(jax.random.key(4), 16)


def test_preprocessing_in_evaluation_is_the_model_input_only():
    batch, keys = _batch()
    pre = inputs.Preprocessing(SPEC, hflip=True, input_noise="mask", noise_level=0.5)
    out = pre(batch, keys, train=False)
    assert set(out) == {"x", "x_in", "label"}
    expected = inputs.to_model_input(batch["image"], inputs.fold(keys, inputs.INPUT_FOLD), SPEC)
    np.testing.assert_array_equal(out["x"], expected)  # No flip in evaluation.
    np.testing.assert_array_equal(out["x_in"], out["x"])  # No corruption in evaluation.
    np.testing.assert_array_equal(out["label"], batch["label"])
    assert set(inputs.Preprocessing(SPEC)({"image": batch["image"]}, keys)) == {"x", "x_in"}  # Unlabelled.
    np.testing.assert_array_equal(pre(batch, keys)["x"], expected)  # train defaults to False.


def test_preprocessing_in_training_flips_the_data_and_corrupts_the_encoder_input():
    """Key folds: 0 binarizes, 3 flips (the flipped image is the data), 2 corrupts x_in only."""
    batch, keys = _batch()
    pre = inputs.Preprocessing(SPEC, hflip=True, input_noise="mask", noise_level=0.5)
    out = pre(batch, keys, train=True)
    binarized = inputs.to_model_input(batch["image"], inputs.fold(keys, 0), SPEC)
    x = inputs.random_hflip(binarized, inputs.fold(keys, 3))
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["x_in"], inputs.corrupt(x, inputs.fold(keys, 2), "mask", 0.5))
    assert not np.array_equal(out["x"], binarized)  # Some examples were flipped ...
    assert not np.array_equal(out["x_in"], out["x"])  # ... and pixels masked.
    # Without augmentation or corruption training sees what evaluation sees.
    plain = inputs.Preprocessing(SPEC)
    np.testing.assert_array_equal(plain(batch, keys, train=True)["x"], binarized)
    np.testing.assert_array_equal(plain(batch, keys, train=True)["x_in"], binarized)


def test_preprocessing_is_hashable_for_jit():
    a = inputs.Preprocessing(SPEC, hflip=True, input_noise="flip", noise_level=0.1)
    assert a == inputs.Preprocessing(SPEC, True, "flip", 0.1) and hash(a) == hash(inputs.Preprocessing(SPEC, True,
                                                                                                       "flip", 0.1))
    batch, keys = _batch()
    jitted = jax.jit(lambda b, k, p: p(b, k, train=True), static_argnums=2)
    for name, value in jitted(batch, keys, a).items():
        np.testing.assert_array_equal(value, a(batch, keys, train=True)[name])


def test_random_crop_shifts_each_image_within_its_reflect_padding():
    images = jnp.arange(2 * 16 * 16 * 3, dtype=jnp.int32).reshape(2, 16, 16, 3)
    assert inputs.crop_padding((16, 16, 3)) == 2 and inputs.crop_padding((32, 24, 1)) == 3
    assert inputs.crop_padding((7, 7, 1)) == 0
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    offsets = set()
    for step in range(12):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(7), step), 2)
        cropped = np.asarray(inputs.random_crop(images, keys, 2))
        np.testing.assert_array_equal(cropped, inputs.random_crop(images, keys, 2))  # Same keys, same crop.
        for i in range(2):  # Each is the 16 x 16 window of its padded image at the offset its key draws.
            dy, dx = np.asarray(jax.random.randint(keys[i], (2,), 0, 5))
            np.testing.assert_array_equal(cropped[i], padded[i, dy:dy + 16, dx:dx + 16])
            offsets.add((int(dy), int(dx)))
    assert len(offsets) > 10 and all(0 <= d <= 4 for pair in offsets for d in pair)  # Steps differ.
    np.testing.assert_array_equal(inputs.random_crop(images, keys, 0), images)  # No padding: unchanged.


def test_preprocessing_random_crop_is_training_only_and_precedes_binarization():
    spec = InputSpec((8, 8, 1), 10, "dynamic")
    keys = jax.random.split(jax.random.key(4), 4)
    batch = {"image": jax.random.randint(jax.random.key(3), (4, 8, 8, 1), 0, 256).astype(jnp.uint8)}
    pre = inputs.Preprocessing(spec, random_crop=True)
    cropped = inputs.random_crop(batch["image"], inputs.fold(keys, inputs.CROP_FOLD), 1)
    expected = inputs.to_model_input(cropped, inputs.fold(keys, inputs.INPUT_FOLD), spec)
    np.testing.assert_array_equal(pre(batch, keys, train=True)["x"], expected)
    assert not np.array_equal(cropped, batch["image"])
    plain = inputs.to_model_input(batch["image"], inputs.fold(keys, inputs.INPUT_FOLD), spec)
    np.testing.assert_array_equal(pre(batch, keys, train=False)["x"], plain)  # Never in evaluation.
