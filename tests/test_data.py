"""Datasets read whole into memory (jaxae.data): the embedded mnist_5k, TFDS splits and
slices, the cifar10_binary reader, .npz datasets, and the InputSpec a dataset gets."""

import os

import numpy as np
import pytest

from jaxae import data
from jaxae.config import Config, ConfigError
from jaxae.datasets import cifar10_binary, mnist_5k


def _spec(builder, split, **changes):
    config = Config.create(**changes)
    return data.input_spec(config.data, config.model, builder, split)


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
    assert _spec(builder, train) == data.InputSpec((28, 28, 1), 10, "dynamic")
    assert _spec(builder, train, binarize="none").mode == "grey"
    spec = _spec(builder, train, binarize="none", likelihood="gaussian")
    assert spec.mode == "dequantize" and spec.image_shape == (28, 28, 1) and spec.num_classes == 10
    assert spec.num_dims == 784
    # Already-binary data is used as is, and 8-bit likelihoods are refused for it.
    binary = data.Split(images=(train.images[:10] > 127).astype(np.uint8), labels=train.labels[:10])
    assert _spec(builder, binary).mode == "binary"
    with pytest.raises(ConfigError, match="^--dataset 'mnist_5k' is binary; --likelihood gaussian needs 8-bit"):
        _spec(builder, binary, binarize="none", likelihood="gaussian")


def test_unknown_dataset_and_split_are_clear_errors(tfds_dir, mnist5k):
    with pytest.raises(ConfigError, match="'no_such_set' is not a TFDS dataset"):
        data.prepared_builder(Config.create(dataset="no_such_set", data_dir=tfds_dir).data)
    with pytest.raises(ConfigError, match="split 'validation' is not in 'mnist_5k'"):
        data.load_split(mnist5k[0], "validation")


def test_split_slices_hold_out_part_of_a_split(mnist5k):
    builder, train, _ = mnist5k
    held_out = data.load_split(builder, "train[4000:]")
    assert len(held_out) == 500 and len(data.load_split(builder, "train[:4000]")) == 4000
    assert {row.tobytes() for row in held_out.images} <= {row.tobytes() for row in train.images}
    with pytest.raises(ConfigError, match=r"split 'train\[9000:\]' of 'mnist_5k' cannot be read \(.*9000"):
        data.load_split(builder, "train[9000:]")


# --- cifar10_binary: the official binary layout, written here record by record ---

def _cifar_record(label: int, seed: int) -> tuple[bytes, np.ndarray]:
    """One record (1 label byte, then the R, G and B planes row-major) and its image (32, 32, 3)."""
    rng = np.random.default_rng(seed)
    planes = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(3)]
    return bytes([label]) + b"".join(p.tobytes() for p in planes), np.stack(planes, axis=-1)


def _write_cifar(folder, per_file: int, test_name: str, test_count: int) -> dict[str, list]:
    """Writes a tiny release in folder/cifar-10-batches-bin; returns the (label, image) pairs per split."""
    batches = folder / cifar10_binary.SUBFOLDER
    batches.mkdir(parents=True)
    written = {"train": [], "test": []}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + [test_name]
    for f, name in enumerate(names):
        split, count = ("test", test_count) if name == test_name else ("train", per_file)
        records = [_cifar_record((f + r) % 10, seed=100 * f + r) for r in range(count)]
        (batches / name).write_bytes(b"".join(raw for raw, _ in records))
        written[split] += [((f + r) % 10, image) for r, (_, image) in enumerate(records)]
    (batches / "batches.meta.txt").write_text("\n".join(cifar10_binary.CLASS_NAMES) + "\n\n")
    return written


def _pairs(split: data.Split) -> list:
    return sorted((int(label), image.tobytes()) for label, image in zip(split.labels, split.images))


def test_cifar10_binary_reads_the_official_layout_exactly(tmp_path):
    written = _write_cifar(tmp_path / "src", per_file=2, test_name="test_batch.bin", test_count=3)
    config = Config.create(dataset="cifar10_binary", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "src"),
                           likelihood="logistic_mixture", binarize="none")
    builder = data.prepared_builder(config.data)
    train, test = data.load_split(builder, "train"), data.load_split(builder, "test")
    assert train.images.shape == (10, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
    assert _pairs(train) == sorted((label, image.tobytes()) for label, image in written["train"])
    assert _pairs(test) == sorted((label, image.tobytes()) for label, image in written["test"])
    assert builder.info.features["label"].names == list(cifar10_binary.CLASS_NAMES)
    spec = data.input_spec(config.data, config.model, builder, train)
    assert spec == data.InputSpec(image_shape=(32, 32, 3), num_classes=10, mode="grey")


def test_cifar10_binary_takes_the_partial_test_file_and_says_so(tmp_path, caplog):
    _write_cifar(tmp_path / "src", per_file=1, test_name="test_batch_first1000.bin", test_count=4)
    config = Config.create(dataset="cifar10_binary", data_dir=str(tmp_path / "tfds"),
                           manual_dir=str(tmp_path / "src")).data
    with caplog.at_level("WARNING", logger="jaxae.datasets.cifar10_binary"):
        builder = data.prepared_builder(config)
    assert len(data.load_split(builder, "test")) == 4
    assert "the test split holds the 4 images of" in caplog.text and "test_batch_first1000.bin" in caplog.text


def test_cifar10_binary_without_its_files_is_a_one_line_error(tmp_path):
    (tmp_path / "src" / cifar10_binary.SUBFOLDER).mkdir(parents=True)
    (tmp_path / "src" / cifar10_binary.SUBFOLDER / "data_batch_1.bin").write_bytes(_cifar_record(3, 0)[0])
    config = Config.create(dataset="cifar10_binary", data_dir=str(tmp_path / "tfds"))
    for manual_dir, message in [(None, "--dataset cifar10_binary needs --manual_dir with cifar-10-batches-bin/"),
                                (str(tmp_path / "src"), f"--manual_dir '{tmp_path / 'src'}' lacks data_batch_2.bin, "
                                 "data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin; it must hold")]:
        with pytest.raises(ConfigError) as error:
            data.prepared_builder(config.replace(manual_dir=manual_dir).data)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)


REAL_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")


@pytest.mark.skipif(not os.path.isdir(REAL_CIFAR), reason="the real CIFAR-10 files are only on the project's machines")
def test_cifar10_binary_reader_on_the_real_files():
    """The real records: labels agree with the separate label list, and the decoded images look like photos."""
    files = cifar10_binary.source_files(REAL_CIFAR)
    images, labels = cifar10_binary.read_records(files["test"][0])
    with open(os.path.join(REAL_CIFAR, "test_labels_all10000.txt")) as f:
        all_labels = [int(line) for line in f if line.strip()]
    np.testing.assert_array_equal(labels, all_labels[:len(labels)])
    train_images, train_labels = cifar10_binary.read_records(files["train"][0])
    assert train_images.shape == (10000, 32, 32, 3) and np.bincount(train_labels).min() > 900
    # Right layout: neighbouring pixels (and the three colours of a pixel) are close, unlike shuffled bytes.
    x = train_images[:500].astype(np.float32)
    shuffled = np.random.default_rng(0).permutation(x.ravel()).reshape(x.shape)
    neighbour = lambda a: np.abs(np.diff(a, axis=2)).mean()  # noqa: E731
    assert neighbour(x) < 0.3 * neighbour(shuffled)
    assert np.abs(x[..., 0] - x[..., 1]).mean() < 0.3 * np.abs(shuffled[..., 0] - shuffled[..., 1]).mean()


def test_npz_dataset_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    train = data.Split(images=rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8),
                       labels=rng.integers(0, 5, 10).astype(np.int32))
    test = data.Split(images=rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8), labels=None)
    path = str(tmp_path / "d.npz")
    data.save_npz(path, {"train": train, "test": test}, num_classes=5)
    source = data.prepared_builder(Config.create(dataset=path).data)
    assert source.splits == ("test", "train") and source.image_shape == (4, 4, 3) and source.num_classes == 5
    loaded = data.load_split(source, "train")
    np.testing.assert_array_equal(loaded.images, train.images)
    np.testing.assert_array_equal(loaded.labels, train.labels)
    np.testing.assert_array_equal(data.load_split(source, "train[7:]").images, train.images[7:])
    np.testing.assert_array_equal(data.load_split(source, "train[:-8]").labels, train.labels[:2])
    assert data.load_split(source, "test").labels is None
    assert _spec(source, loaded, dataset=path, binarize="none") == data.InputSpec((4, 4, 3), 5, "grey")
    for bad, message in (("valid", "not in"), ("train[a:]", "name\\[start:stop\\]"), ("train[10:]", "empty")):
        with pytest.raises(ConfigError, match=message):
            data.load_split(source, bad)
    with pytest.raises(ConfigError, match="is not a file"):
        data.prepared_builder(Config.create(dataset=str(tmp_path / "missing.npz")).data)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REAL_CIFAR), reason="the real CIFAR-10 files are only on the project's machines")
def test_cifar10_binary_prepares_the_real_release(tmp_path):
    """~30 s on 2 cores: all 50,000 training images, balanced, and the test images with their official labels."""
    builder = data.prepared_builder(Config.create(dataset="cifar10_binary", data_dir=str(tmp_path),
                                                  manual_dir=REAL_CIFAR).data)
    train, test = data.load_split(builder, "train"), data.load_split(builder, "test")
    assert train.images.shape == (50000, 32, 32, 3) and np.bincount(train.labels).tolist() == [5000] * 10
    with open(os.path.join(REAL_CIFAR, "test_labels_all10000.txt")) as f:
        official = np.array([int(line) for line in f if line.strip()])
    assert len(test) in (1000, 10000)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.bincount(official[:len(test)]))


def test_malformed_npz_datasets_are_one_line_errors(tmp_path):
    images = np.zeros((3, 4, 4, 1), np.uint8)
    cases = {
        "not_npz.npz": None,
        "no_images.npz": {"train_pixels": images},
        "float_images.npz": {"train_images": images.astype(np.float32)},
        "flat_images.npz": {"train_images": np.zeros((3, 16), np.uint8)},
        "two_shapes.npz": {"train_images": images, "test_images": np.zeros((2, 5, 5, 1), np.uint8)},
        "float_labels.npz": {"train_images": images, "train_labels": np.zeros(3, np.float32)},
        "short_labels.npz": {"train_images": images, "train_labels": np.zeros(2, np.int32)},
        "bad_classes.npz": {"train_images": images, "num_classes": np.array([5, 5])},
        "pickled.npz": {"train_images": images, "extra": np.array([{"a": 1}], dtype=object)},
    }
    messages = {
        "not_npz.npz": "is not a readable .npz of plain arrays (not an .npz archive)",
        "no_images.npz": "holds no <split>_images array (it has ['train_pixels'])",
        "float_images.npz": "every <split>_images must be uint8 (N, H, W, C) of one shape",
        "flat_images.npz": "every <split>_images must be uint8 (N, H, W, C) of one shape",
        "two_shapes.npz": "every <split>_images must be uint8 (N, H, W, C) of one shape",
        "float_labels.npz": "train_labels must be integers, one per image; got float32 (3,)",
        "short_labels.npz": "train_labels must be integers, one per image; got int32 (2,)",
        "bad_classes.npz": "num_classes must be a non-negative integer scalar",
        "pickled.npz": "is not a readable .npz of plain arrays",
    }
    for name, arrays in cases.items():
        path = tmp_path / name
        if arrays is None:
            path.write_bytes(b"not a zip file")
        else:
            np.savez(path, **arrays)
        with pytest.raises(ConfigError) as error:
            data.prepared_builder(Config.create(dataset=str(path)).data)
        text = str(error.value)
        assert text.startswith(f"--dataset '{path}'") and messages[name] in text and "\n" not in text, (name, text)


def test_save_npz_writes_atomically_and_compressed(tmp_path):
    split = data.Split(images=np.zeros((100, 8, 8, 1), np.uint8), labels=None)
    assert len(split) == 100
    path = tmp_path / "zeros.npz"
    data.save_npz(str(path), {"train": split}, num_classes=0)
    assert sorted(os.listdir(tmp_path)) == ["zeros.npz"]  # No temporary file left behind.
    assert path.stat().st_size < split.images.nbytes / 10  # Compressed.
    source = data.ArraySource.open(str(path))
    assert source == data.ArraySource(path=str(path), splits=("train",), image_shape=(8, 8, 1), num_classes=0)
    assert source.name == "zeros.npz" and data.load_split(source, "train").labels is None
