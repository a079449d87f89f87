"""Input: TFDS, .npz or image-folder datasets read whole into host memory as uint8 splits.

A named dataset, the embedded default ``mnist_5k`` included, goes through TFDS:
``tfds.builder(name).download_and_prepare(...)`` then the whole split is read into
memory as uint8 (N, H, W, C). Small datasets (MNIST family, CIFAR-10) then live on
the device; training batches are gathered there from a per-epoch permutation
(jaxae.inputs.epoch_permutation), so no step waits on the host. An ``.npz`` file
(:class:`ArraySource`) and a folder of image files (jaxae.folders, decoded once into a
cached ``.npz``) are read without TensorFlow. ``--image_size`` fits every image to a square
once, on the host, as a split is loaded (:func:`load_split`).

How a uint8 image becomes model input is fixed by :class:`InputSpec` and done on the
device by jaxae.inputs: already-binary data is used as is; 8-bit data is either
binarized with a Bernoulli draw per pixel, scaled to [0, 1], or uniformly dequantized.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from jaxae import images, io
from jaxae.config import DataConfig, ModelConfig
from jaxae.errors import ConfigError

# Datasets larger than this are refused until a streaming pipeline exists: they would
# not fit in device memory as a whole split.
MAX_RESIDENT_BYTES = 4 << 30
# Images read from TFDS at a time when --image_size fits them on loading.
FIT_BATCH = 1024


INPUT_MODES = ("binary", "dynamic", "grey", "dequantize")
MAX_SIDE = 1 << 15
MAX_CLASSES = 1 << 20


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How images enter the model (hashable: used as a jit-static argument).

    image_shape: (H, W, C). num_classes: label count (0 when unlabeled).
    mode: ``binary`` (data is {0, 1}), ``dynamic`` (Bernoulli draw from k / 255),
    ``grey`` (k / 255), or ``dequantize`` ((k + u) / 256, u ~ U[0, 1)).
    num_train: images in the training split (0: unknown), for objectives that need the
    data set's size N (btcvae's estimate of q(z)); it does not change how images enter
    the model, so it takes no part in equality.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    mode: str
    num_train: int = dataclasses.field(default=0, compare=False)

    def __post_init__(self):
        shape = self.image_shape
        if len(shape) != 3 or not all(isinstance(n, int) and 0 < n <= MAX_SIDE for n in shape):
            raise ConfigError(f"image shape {tuple(shape)} must be (height, width, channels) with each in "
                              f"1..{MAX_SIDE}")
        if not isinstance(self.num_classes, int) or not 0 <= self.num_classes <= MAX_CLASSES:
            raise ConfigError(f"num_classes {self.num_classes!r} must be in 0..{MAX_CLASSES}")
        if not isinstance(self.num_train, int) or self.num_train < 0:
            raise ConfigError(f"num_train {self.num_train!r} must be a non-negative integer")
        if self.mode not in INPUT_MODES:
            raise ConfigError(f"input mode {self.mode!r} must be one of {', '.join(INPUT_MODES)}")

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)


@dataclasses.dataclass(frozen=True)
class Split:
    """A whole split in host memory. images: uint8 (N, H, W, C); labels: int32 (N,) or None;
    factors: int (N, F), the known factors of variation of a dataset that has them (the
    TFDS feature or .npz array ``factors``, e.g. ``shapes``), else None."""

    images: np.ndarray
    labels: np.ndarray | None
    factors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def _tfds():
    """Imports TFDS with TensorFlow kept off any GPU and jaxae's builders registered."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF only reads files here; also silences a banner.
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # Already initialised: devices can no longer change.
        pass
    import tensorflow_datasets as tfds

    import jaxae.datasets  # noqa: F401  (registers mnist_5k, cifar10_binary and shapes)

    return tfds


NPZ_SUFFIX = ".npz"


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """A dataset stored as one ``.npz`` file (``--dataset path/to/data.npz``), for machines
    without TensorFlow or data that is not in TFDS. The file holds ``<split>_images``
    uint8 (N, H, W, C) per split, optionally ``<split>_labels`` int (N,) and
    ``num_classes`` (scalar) and ``<split>_factors`` int (N, F). :func:`save_npz` writes one from any loaded splits."""

    path: str
    splits: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_classes: int
    title: str | None = None  # What messages call it (default: the file's name), e.g. the folder it caches.

    @property
    def name(self) -> str:
        return self.title or os.path.basename(self.path)

    @classmethod
    def open(cls, path: str) -> "ArraySource":
        if not os.path.isfile(path):
            raise ConfigError(f"--dataset {path!r} is not a file; an .npz dataset holds <split>_images arrays")
        arrays = io.read_npz(path, "--dataset")
        splits = tuple(sorted(k[:-len("_images")] for k in arrays if k.endswith("_images")))
        if not splits:
            raise ConfigError(f"--dataset {path!r} holds no <split>_images array (it has {sorted(arrays)})")
        shapes = {arrays[f"{split}_images"].shape[1:] for split in splits}
        dtypes = {arrays[f"{split}_images"].dtype for split in splits}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or dtypes != {np.dtype(np.uint8)}:
            raise ConfigError(f"--dataset {path!r}: every <split>_images must be uint8 (N, H, W, C) of one shape; "
                              f"got shapes {sorted(shapes)} and dtypes {sorted(map(str, dtypes))}")
        for split in splits:
            labels = arrays.get(f"{split}_labels")
            count = arrays[f"{split}_images"].shape[:1]
            if labels is not None and (labels.dtype.kind not in "iu" or labels.shape != count):
                raise ConfigError(f"--dataset {path!r}: {split}_labels must be integers, one per image; got "
                                  f"{labels.dtype} {labels.shape}")
        num_classes = arrays.get("num_classes")
        if num_classes is not None and (num_classes.shape != () or num_classes.dtype.kind not in "iu"
                                        or not 0 <= int(num_classes) <= 1 << 20):
            raise ConfigError(f"--dataset {path!r}: num_classes must be a non-negative integer scalar, "
                              f"got {num_classes!r}")
        return cls(path=path, splits=splits, image_shape=tuple(int(d) for d in next(iter(shapes))),
                   num_classes=0 if num_classes is None else int(num_classes))

    def load(self, split: str) -> Split:
        """A split by name, or a slice of one with integer or percent bounds, e.g. ``train[45000:]``
        or ``train[:90%]`` (a percent bound is rounded to the nearest image)."""
        match = re.fullmatch(r"(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?", split)
        if match is None:
            raise ConfigError(f"split {split!r} of {self.name!r}: use a name or name[start:stop] with integers "
                              "or percents")
        name, start, stop = match.groups()
        if name not in self.splits:
            raise ConfigError(f"split {split!r} is not in {self.name!r}; it has {list(self.splits)}")
        arrays = io.read_npz(self.path, "--dataset")
        count = len(arrays[f"{name}_images"])
        bounds = [None if b is None else round(count * int(b[:-1]) / 100) if b.endswith("%") else int(b)
                  for b in (start, stop)]
        images = arrays[f"{name}_images"][bounds[0]:bounds[1]]
        labels = arrays[f"{name}_labels"][bounds[0]:bounds[1]] if f"{name}_labels" in arrays else None
        factors = arrays[f"{name}_factors"][bounds[0]:bounds[1]] if f"{name}_factors" in arrays else None
        if not len(images):
            raise ConfigError(f"split {split!r} of {self.name!r} is empty")
        return Split(images=np.ascontiguousarray(images), labels=None if labels is None else labels.astype(np.int32),
                     factors=factors)


def save_npz(path: str, splits: dict[str, Split], num_classes: int) -> None:
    """Writes loaded splits as an :class:`ArraySource` file (compressed, atomically)."""
    arrays = {"num_classes": np.asarray(num_classes)}
    for name, split in splits.items():
        arrays[f"{name}_images"] = split.images
        if split.labels is not None:
            arrays[f"{name}_labels"] = split.labels
        if split.factors is not None:
            arrays[f"{name}_factors"] = split.factors
    with io.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def prepared_builder(config: DataConfig):
    """Returns the TFDS builder of ``config.dataset``, prepared (downloaded or from --manual_dir),
    or an :class:`ArraySource` when the dataset is an ``.npz`` file."""
    if config.dataset.endswith(NPZ_SUFFIX):
        return ArraySource.open(config.dataset)
    if os.path.isdir(config.dataset):
        from jaxae import folders  # It builds on this module.

        return folders.prepare(config.dataset, config.image_size, config.data_dir)
    tfds = _tfds()
    try:
        builder = tfds.builder(config.dataset, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"--dataset {config.dataset!r} is not a TFDS dataset, an .npz file or a folder; use a name from "
            "tfds.list_builders(), e.g. mnist_5k (embedded), shapes (generated), mnist, binarized_mnist, "
            "fashion_mnist, cifar10, "
            "or cifar10_binary (CIFAR-10 from the extracted official binary release in --manual_dir), or a "
            "folder holding train/ and test/ image folders"
        ) from None
    features = builder.info.features
    image = features["image"] if "image" in features else None
    if image is None or len(image.shape) != 3 or image.np_dtype != np.uint8:
        raise ConfigError(f"--dataset {config.dataset!r} has no uint8 'image' feature of shape (H, W, C)")
    if None in image.shape:
        raise ConfigError(f"--dataset {config.dataset!r} has images of varying size {image.shape}; "
                          "jaxae needs a fixed (H, W, C)")
    if config.manual_dir is not None and not os.path.isdir(config.manual_dir):
        raise ConfigError(f"--manual_dir {config.manual_dir!r} is not a directory")
    download_config = tfds.download.DownloadConfig(manual_dir=config.manual_dir, try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=download_config)
    except ConfigError:  # Raised by jaxae's own builders: already one clear line.
        raise
    except Exception as e:  # TFDS raises many types for network/manual-file problems.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"cannot prepare TFDS dataset {config.dataset!r} in {builder.data_dir!r} ({type(e).__name__}: "
            f"{reason[:300]}); without internet pass --manual_dir with its source files"
        ) from None
    return builder


def _tfds_split_size(builder, split: str) -> int:
    """Examples in a TFDS split expression; ConfigError naming the split when it cannot be read."""
    known = sorted(builder.info.splits)
    try:
        num_examples = builder.info.splits[split].num_examples
    except ValueError as e:  # Unknown name, bad syntax or a slice out of range.
        if split.isidentifier():
            raise ConfigError(f"split {split!r} is not in {builder.name!r}; it has {known}") from None
        reason = str(e).strip().splitlines()[-1]
        raise ConfigError(f"split {split!r} of {builder.name!r} cannot be read ({reason}); it has {known}, "
                          "which take TFDS slices such as 'train[45000:]' or 'train[:90%]'") from None
    if not num_examples:
        raise ConfigError(f"split {split!r} of {builder.name!r} is empty")
    return num_examples


def split_size(builder, split: str, image_size: int | None = None) -> tuple[int, tuple[int, int, int]]:
    """(number of images, their (H, W, C) after ``image_size``) of a split, without reading it
    (an .npz source is read: it is held in memory anyway)."""
    if isinstance(builder, ArraySource):
        count, shape = len(builder.load(split)), builder.image_shape
    else:
        count, shape = _tfds_split_size(builder, split), tuple(builder.info.features["image"].shape)
    return count, shape if image_size is None else (image_size, image_size, shape[2])


def iter_split(builder, split: str, image_size: int | None = None, batch_size: int = FIT_BATCH):
    """Yields a split in order as (uint8 images (b, H, W, C), int32 labels (b,) or None) batches
    of up to ``batch_size``, fitted to ``image_size`` on the host: only one batch is held."""
    if isinstance(builder, ArraySource):
        loaded = builder.load(split)
        for start in range(0, len(loaded), batch_size):
            chunk = loaded.images[start:start + batch_size]
            yield (chunk if image_size is None else images.fit_all(chunk, image_size),
                   None if loaded.labels is None else loaded.labels[start:start + batch_size])
        return
    tfds = _tfds()
    _tfds_split_size(builder, split)
    for batch in tfds.as_numpy(builder.as_dataset(split=split, batch_size=batch_size, shuffle_files=False)):
        chunk = np.asarray(batch["image"], np.uint8)
        yield (chunk if image_size is None else images.fit_all(chunk, image_size),
               np.asarray(batch["label"], np.int32) if "label" in batch else None)


def load_split(builder, split: str, image_size: int | None = None, max_bytes: int = MAX_RESIDENT_BYTES) -> Split:
    """Reads a whole split of a prepared builder into host memory, every image fitted to
    ``image_size`` x ``image_size`` (jaxae.images.fit: shorter side resized, antialiased, then
    centre-cropped) when given; a folder dataset's cache already holds them at that size.

    ``split`` is a split name or any TFDS split expression: a slice such as
    ``train[45000:]`` or ``train[:90%]``, or a union such as ``train+test``. A split over
    ``max_bytes`` as uint8 is refused (train.py streams such training splits: --input).
    """
    count, shape = split_size(builder, split, image_size)
    num_bytes = count * math.prod(shape)
    if num_bytes > max_bytes:
        raise ConfigError(
            f"split {split!r} of {builder.name!r} needs {num_bytes / 2**30:.2f} GiB as uint8 {tuple(shape)} images; "
            f"a split held whole is limited to {max_bytes / 2**30:.2f} GiB (--resident_limit_mib); train.py "
            "streams larger training splits (--input streaming or auto); evaluate a slice such as 'test[:10000]'")
    if isinstance(builder, ArraySource) and image_size is None:
        return builder.load(split)
    if image_size is None:
        tfds = _tfds()
        arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
        labels, factors = arrays.get("label"), arrays.get("factors")
        return Split(images=np.asarray(arrays["image"], np.uint8),
                     labels=None if labels is None else np.asarray(labels, np.int32),
                     factors=None if factors is None else np.asarray(factors))
    # Fitted batch by batch, so that only the fitted split is held whole (e.g. celeb_a at 64 x 64);
    # factors of variation are not carried through the fitting.
    batches = list(iter_split(builder, split, image_size))
    labels = [b for _, b in batches if b is not None]
    return Split(images=np.concatenate([b for b, _ in batches]), labels=np.concatenate(labels) if labels else None)


def input_spec(data: DataConfig, model: ModelConfig, builder, train: Split, num_train: int | None = None
               ) -> InputSpec:
    """Decides how images are scored from the data, the likelihood and the binarization setting.
    num_train: the training split's size when ``train`` is only part of it (default len(train))."""
    image_shape = tuple(int(d) for d in train.images.shape[1:])  # After any --image_size.
    if isinstance(builder, ArraySource):
        num_classes = builder.num_classes
    else:
        label = builder.info.features["label"] if "label" in builder.info.features else None
        num_classes = int(getattr(label, "num_classes", 0) or 0)
    if int(train.images.max(initial=0)) <= 1:
        if model.likelihood in ("gaussian", "logistic_mixture"):
            raise ConfigError(f"--dataset {data.dataset!r} is binary; --likelihood {model.likelihood} "
                              "needs 8-bit images")
        mode = "binary"
    elif model.likelihood == "gaussian":
        mode = "dequantize"
    else:
        mode = "dynamic" if data.binarize == "dynamic" else "grey"
    return InputSpec(image_shape=image_shape, num_classes=num_classes, mode=mode,
                     num_train=len(train) if num_train is None else num_train)
