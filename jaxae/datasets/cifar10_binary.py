"""``cifar10_binary``: CIFAR-10 (Krizhevsky 2009) prepared offline from the official binary release.

TFDS's own ``cifar10`` downloads (and checksums) the archive; this builder instead reads
the extracted ``cifar-10-binary.tar.gz`` from ``--manual_dir``: the folder
``cifar-10-batches-bin/`` (or the manual dir itself) holding ``data_batch_1.bin`` ..
``data_batch_5.bin`` (50,000 train images), ``test_batch.bin`` (10,000 test images) and
``batches.meta.txt`` (the class names, checked when present). Each record is 1 label
byte then 3,072 pixel bytes: the 1,024 red, then green, then blue values of a 32x32
image, row-major. Splits: ``train`` (data batches 1-5 in order) and ``test``.

When ``test_batch.bin`` is absent but ``test_batch_first1000.bin`` (its first 1,000
records) is present, ``test`` holds those 1,000 images only, and preparing says so;
``info.splits['test'].num_examples`` records which. The prepared dataset is cached in
the TFDS data dir: delete ``<data_dir>/cifar10_binary`` to rebuild it from other files.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxae.config import ConfigError

log = logging.getLogger(__name__)

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SUBFOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin", "test_batch_first1000.bin")  # In order of preference.
META_FILE = "batches.meta.txt"
RECORD_BYTES = 1 + 32 * 32 * 3
EXPECTED = (f"{SUBFOLDER}/{{data_batch_1..5.bin, test_batch.bin, {META_FILE}}} "
            "(the extracted cifar-10-binary.tar.gz)")


def _find(folder: str, name: str) -> str | None:
    """The path of ``name`` in folder/cifar-10-batches-bin or folder itself, or None."""
    for parent in (os.path.join(folder, SUBFOLDER), folder):
        if os.path.isfile(os.path.join(parent, name)):
            return os.path.join(parent, name)
    return None


def source_files(folder: str | None) -> dict[str, list[str]]:
    """The source files in a manual dir: {"train": 5 paths, "test": 1 path, "meta": 0 or 1 path}.

    Raises ConfigError naming the folder and the expected files when some are missing.
    """
    if folder is None or not os.path.isdir(folder):
        raise ConfigError(f"--dataset cifar10_binary needs --manual_dir with {EXPECTED}; "
                          f"{'none was given' if folder is None else repr(folder) + ' is not a directory'}")
    train = [_find(folder, name) for name in TRAIN_FILES]
    test = next(filter(None, (_find(folder, name) for name in TEST_FILES)), None)
    missing = [name for name, path in zip(TRAIN_FILES, train) if path is None] + ([] if test else ["test_batch.bin"])
    if missing:
        raise ConfigError(f"--manual_dir {folder!r} lacks {', '.join(missing)}; it must hold {EXPECTED}")
    meta = _find(folder, META_FILE)
    return {"train": train, "test": [test], "meta": [meta] if meta else []}


def read_records(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One .bin file -> (images uint8 (N, 32, 32, 3), labels int64 (N,))."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise ConfigError(f"{path!r} has {raw.size} bytes, not a positive multiple of {RECORD_BYTES} "
                          "(1 label byte + 3,072 pixel bytes per CIFAR-10 record)")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASS_NAMES):
        raise ConfigError(f"{path!r} holds label {labels.max()}; CIFAR-10 labels are 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # Channel planes -> (H, W, C).
    return np.ascontiguousarray(images), labels


def check_class_names(path: str) -> None:
    with open(path) as f:
        names = tuple(line.strip() for line in f if line.strip())
    if names != CLASS_NAMES:
        raise ConfigError(f"{path!r} lists classes {list(names)}; CIFAR-10's are {list(CLASS_NAMES)}")


class Cifar10Binary(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10 from the extracted official binary release in --manual_dir (no download)."""

    name = "cifar10_binary"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: the official binary batches, train 50,000, test 10,000 or 1,000."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass "
        f"the folder that holds {SUBFOLDER}/ as --manual_dir.")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        )

    def _split_generators(self, dl_manager):
        try:
            folder = os.fspath(dl_manager.manual_dir)
        except AssertionError:  # No --manual_dir, and TFDS's default manual folder is absent or empty.
            folder = None
        files = source_files(folder)
        for meta in files["meta"]:
            check_class_names(meta)
        test = files["test"][0]
        count = os.path.getsize(test) // RECORD_BYTES
        if os.path.basename(test) != TEST_FILES[0]:
            log.warning("cifar10_binary: %s not in %r; the test split holds the %d images of %s only "
                        "(CIFAR-10 has 10,000)", TEST_FILES[0], folder, count, test)
        else:
            log.info("cifar10_binary: the test split holds the %d images of %s", count, test)
        return {"train": self._generate_examples(files["train"]), "test": self._generate_examples(files["test"])}

    def _generate_examples(self, paths):
        index = 0
        for path in paths:
            images, labels = read_records(path)
            for image, label in zip(images, labels):
                yield index, {"image": image, "label": int(label)}
                index += 1
