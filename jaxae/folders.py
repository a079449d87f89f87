"""Folders of image files as datasets (``--dataset DIR``), decoded once into a cached ``.npz``.

Layout: ``DIR/train/`` and optionally ``DIR/test/`` and ``DIR/validation/`` (other entries
of DIR are ignored). A split folder holds either image files (unlabeled: num_classes 0)
or one subfolder per class, whose files (at any depth) get the label of the class: the
index of its subfolder's name among train/'s subfolders, sorted. Hidden entries (``.*``)
and files whose extension PIL does not register as an image format are ignored.

Decoding: every image becomes uint8 grey (H, W, 1) or RGB (H, W, 3) (jaxae.images.as_array);
if any image of the folder is in colour, the grey ones are repeated to RGB (a warning says
so). With ``image_size`` N each image is fitted to N x N (jaxae.images.fit); without it all
images must share one size. A file that cannot be decoded stops preparation with one line
naming it (and how many others fail): the cached dataset is exactly the folder's images.
Each split is stored in a fixed shuffled order (:data:`ORDER_SEED`), so slices such as
``train[:90%]`` / ``train[90%:]`` hold out images of every class.

Cache: ``<data_dir or ~/.cache/jaxae>/folders/<name>-<where>-<what>.npz`` (an
:class:`jaxae.data.ArraySource` file, written atomically), where ``where`` hashes the folder's
absolute path and the image size, and ``what`` hashes every image file's relative path, size
and modification time (and the decoding version). Listing the folder costs one ``stat`` per
file, so an unchanged folder is never decoded twice, and any added, removed, renamed or
rewritten file gives a new key: the folder is decoded again and the stale file of the same
``where`` is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os

import numpy as np
from PIL import Image, ImageOps

from jaxae import data, images
from jaxae.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Part of the cache key: bump when decoding or resizing changes, so old caches are not reused.
DECODING_VERSION = 1
# Each split is stored in the order of a fixed permutation of its sorted files, so that a
# slice such as train[:90%] takes images of every class, not the first classes.
ORDER_SEED = 0
# How many unreadable files the error names (it counts them all).
NAMED_FAILURES = 3


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxae")


@dataclasses.dataclass(frozen=True)
class Listing:
    """The image files of a folder dataset. files: {split: ((path relative to the folder, label), ...)},
    label -1 when unlabeled; classes: the class names (train/'s subfolders, sorted), () when unlabeled."""

    root: str
    files: dict[str, tuple[tuple[str, int], ...]]
    classes: tuple[str, ...]

    def fingerprint(self, image_size: int | None) -> str:
        """A hash of every file's relative path, size and modification time, the classes and the size."""
        digest = hashlib.sha256(f"{DECODING_VERSION} {image_size} {self.classes}".encode())
        for split, entries in sorted(self.files.items()):
            for relative, label in entries:
                stat = os.stat(os.path.join(self.root, relative))
                digest.update(f"\n{split} {label} {relative} {stat.st_size} {stat.st_mtime_ns}".encode())
        return digest.hexdigest()


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in Image.registered_extensions()


def _image_files(folder: str, root: str) -> list[str]:
    """Image files under ``folder`` at any depth, as sorted paths relative to ``root``."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.relpath(os.path.join(parent, name), root) for name in names if _is_image(name)]
    return sorted(found)


def scan(root: str) -> Listing:
    """Lists the image files of each split folder of ``root``, with labels from class subfolders."""
    if not os.path.isdir(os.path.join(root, "train")):
        raise ConfigError(f"--dataset {root!r} has no train/ folder; a folder dataset holds train/ and test/ "
                          "(optionally validation/), each with images or one subfolder of images per class")
    layouts, files = {}, {}
    for split in SPLITS:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            continue
        entries = sorted(os.listdir(folder))
        subfolders = [e for e in entries if not e.startswith(".") and os.path.isdir(os.path.join(folder, e))]
        loose = [e for e in entries if e not in subfolders and _is_image(e)]
        if subfolders and loose:
            raise ConfigError(f"--dataset {root!r}: {split}/ mixes images ({loose[0]}) with class folders; "
                              "put every image in its class folder, or use no class folders")
        layouts[split] = tuple(subfolders)
        files[split] = (tuple((path, c) for c, name in enumerate(subfolders)
                              for path in _image_files(os.path.join(folder, name), root))
                        if subfolders else tuple((path, -1) for path in _image_files(folder, root)))
        if not files[split]:
            raise ConfigError(f"--dataset {root!r}: {split}/ holds no image files (extensions PIL reads: "
                              ".png, .jpg, .bmp, ...)")
    classes = layouts["train"]
    for split, names in layouts.items():
        if bool(names) != bool(classes) or not set(names) <= set(classes):
            raise ConfigError(f"--dataset {root!r}: the class folders of {split}/ {list(names)} must be among "
                              f"those of train/ {list(classes)} (or neither has class folders)")
        # Labels index train/'s classes, which a split may have only some of.
        files[split] = tuple((path, -1 if label < 0 else classes.index(names[label])) for path, label in files[split])
    return Listing(root=root, files=files, classes=classes)


def decode(path: str) -> np.ndarray:
    """One image file -> uint8 (H, W, 1) or (H, W, 3), upright by its EXIF orientation (jaxae.images.as_array)."""
    with Image.open(path) as image:
        image.load()
        return images.as_array(ImageOps.exif_transpose(image))


def _read(listing: Listing, image_size: int | None) -> dict[str, data.Split]:
    """Decodes every file of ``listing`` -> {split: Split} of uint8 (N, H, W, C) images, C = 1 if all are
    grey, else 3, in a fixed shuffled order. ConfigError for unreadable files,
    differing sizes without ``image_size``, or a dataset too large to hold in memory."""
    root, total = listing.root, sum(map(len, listing.files.values()))
    arrays: dict[str, np.ndarray] = {}
    failures: list[str] = []
    colour, shape = np.zeros(0, bool), None
    for split, entries in listing.files.items():
        colour_of_split = np.zeros(len(entries), bool)
        out = None
        for i, (relative, _) in enumerate(entries):
            path = os.path.join(root, relative)
            try:
                image = decode(path)
            except Exception as e:  # PIL's decoders raise many types for a broken file; all mean "unreadable".
                reason = str(e).splitlines()[0].replace(path, relative) if str(e) else "no reason given"
                failures.append(f"{relative} ({type(e).__name__}: {reason})")
                continue
            if image_size is not None:
                image = images.fit(image, image_size)
            if shape is None:
                shape = image.shape[:2]
                needed = total * shape[0] * shape[1] * 3
                if needed > data.MAX_RESIDENT_BYTES:
                    raise ConfigError(f"--dataset {root!r}: {total} images of {shape[0]}x{shape[1]} need "
                                      f"{needed / 2**30:.1f} GiB; at most {data.MAX_RESIDENT_BYTES / 2**30:.0f} GiB "
                                      "are held in memory (a smaller --image_size fits more)")
            if image.shape[:2] != shape:
                raise ConfigError(f"--dataset {root!r}: {relative} is {image.shape[0]}x{image.shape[1]} but other "
                                  f"images are {shape[0]}x{shape[1]}; pass --image_size N to resize all to N x N")
            if out is None:
                out = np.empty((len(entries), *shape, 3), np.uint8)
            out[i] = image
            colour_of_split[i] = image.shape[2] == 3
        arrays[split] = out
        colour = np.concatenate([colour, colour_of_split])
    if failures:
        named = "; ".join(failures[:NAMED_FAILURES])
        more = f" and {len(failures) - NAMED_FAILURES} more" if len(failures) > NAMED_FAILURES else ""
        raise ConfigError(f"--dataset {root!r}: {len(failures)} of {total} image files cannot be read: "
                          f"{named}{more}; fix or remove them")
    channels = 3 if colour.any() else 1
    if channels == 3 and not colour.all():
        log.warning("--dataset %r mixes %d grey and %d colour images: all are used as RGB (grey repeated to 3 "
                    "channels)", root, int((~colour).sum()), int(colour.sum()))
    splits = {}
    for split, entries in listing.files.items():
        order = np.random.default_rng(ORDER_SEED).permutation(len(entries))
        labels = np.array([label for _, label in entries], np.int32)[order]
        splits[split] = data.Split(images=arrays[split][order, ..., :channels],
                                   labels=labels if listing.classes else None)
    return splits


def prepare(root: str, image_size: int | None, cache_dir: str | None = None) -> data.ArraySource:
    """The folder dataset at ``root`` as an ArraySource over its cached ``.npz``: decoded (and fitted
    to ``image_size``) now if the folder changed since it was cached, else read from the cache."""
    listing = scan(root)
    cache_dir = os.path.join(cache_dir or default_cache_dir(), "folders")
    name = os.path.basename(os.path.normpath(os.path.abspath(root))) or "root"
    where = hashlib.sha256(f"{os.path.abspath(root)} {image_size}".encode()).hexdigest()[:8]
    prefix = f"{name}-{where}-"
    path = os.path.join(cache_dir, prefix + listing.fingerprint(image_size)[:16] + data.NPZ_SUFFIX)
    if not os.path.isfile(path):
        splits = _read(listing, image_size)
        try:
            os.makedirs(cache_dir, exist_ok=True)
            data.save_npz(path, splits, num_classes=len(listing.classes))
        except OSError as e:
            raise ConfigError(f"cannot write the decoded --dataset {root!r} to {cache_dir!r} ({e.strerror or e}); "
                              "choose a writable cache folder with --data_dir") from None
        for stale in os.listdir(cache_dir):
            if stale.startswith(prefix) and stale.endswith(data.NPZ_SUFFIX) and stale != os.path.basename(path):
                with contextlib.suppress(OSError):  # Another process may have removed it first.
                    os.remove(os.path.join(cache_dir, stale))
        log.info("decoded %s (%s) into %s", root, ", ".join(f"{len(s)} {k}" for k, s in splits.items()), path)
    return dataclasses.replace(data.ArraySource.open(path), title=root)
