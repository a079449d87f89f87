"""Streaming input: training splits larger than device (or host) memory.

A split is written once, batch by batch, to a memory-mapped uint8 copy on disk
(:func:`open_split`: ``images.npy`` (N, H, W, C) and ``labels.npy`` (N,), beside the
prepared data). Training then reads it in chunks of steps (:class:`Feeder`): a background
thread assembles the next chunk's batches on the host while the devices run the current
one (prefetch), and places them on the devices. Each batch holds the rows of the same
per-epoch permutation the resident path gathers on the device
(``jaxae.inputs.epoch_permutation`` of the seed and the epoch), so streamed training sees
the same examples in the same order as resident training (the same losses), and resuming
needs only the step number (mid-epoch included).

With several processes each process reads only its own rows of every global batch (its
devices' contiguous slice, :func:`local_rows`) and the global batch is assembled with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import shutil
import threading

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxae import data, inputs, io
from jaxae.errors import ConfigError

STREAMS_DIR = "jaxae_streams"
DONE_FILE = "split.json"
PREFETCH_CHUNKS = 2  # Chunks assembled ahead of the one the devices run.


@dataclasses.dataclass(frozen=True)
class SplitFile:
    """A split on disk, memory-mapped: images uint8 (N, H, W, C); labels int32 (N,) or None."""

    images: np.ndarray
    labels: np.ndarray | None
    path: str

    def __len__(self) -> int:
        return len(self.images)


def stream_dir(builder, split: str, image_size: int | None, cache_dir: str | None) -> str:
    """Where a split's copy lives: beside the prepared TFDS data, or for an .npz / folder source
    in ``cache_dir`` (default ~/.cache/jaxae), keyed by the source, the split and the size."""
    if isinstance(builder, data.ArraySource):
        stat = os.stat(builder.path)
        key = f"{os.path.abspath(builder.path)}|{stat.st_size}|{stat.st_mtime_ns}|{split}|{image_size}"
        from jaxae import folders

        root = os.path.join(cache_dir or folders.default_cache_dir(), STREAMS_DIR)
        name = os.path.splitext(builder.name)[0]
    else:
        key = f"{builder.info.full_name}|{split}|{image_size}"
        root, name = os.path.join(builder.data_dir, STREAMS_DIR), builder.name
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(root, f"{name}-{''.join(c if c.isalnum() else '_' for c in split)}-{digest}")


def open_split(builder, split: str, image_size: int | None = None, cache_dir: str | None = None) -> SplitFile:
    """The memory-mapped copy of a split, written first if there is none (atomically: a folder
    written under a temporary name and renamed when complete)."""
    path = stream_dir(builder, split, image_size, cache_dir)
    if not os.path.exists(os.path.join(path, DONE_FILE)):
        _write(builder, split, image_size, path)
    try:
        with open(os.path.join(path, DONE_FILE)) as f:
            meta = json.load(f)
        images = np.load(os.path.join(path, "images.npy"), mmap_mode="r", allow_pickle=False)
        labels = (np.load(os.path.join(path, "labels.npy"), mmap_mode="r", allow_pickle=False)
                  if meta["labels"] else None)
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != meta["count"] or (
                labels is not None and labels.shape != (len(images),)):
            raise ValueError(f"images {images.dtype} {images.shape}, expected {meta['count']} uint8 images")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the streaming copy {path!r} is damaged ({type(e).__name__}: {str(e)[:200]}); "
                          "delete it and it is written again") from None
    return SplitFile(images=images, labels=labels, path=path)


def _write(builder, split: str, image_size: int | None, path: str) -> None:
    count, shape = data.split_size(builder, split, image_size)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with io.writing(tmp):
            os.makedirs(tmp, exist_ok=True)
            images = np.lib.format.open_memmap(os.path.join(tmp, "images.npy"), mode="w+", dtype=np.uint8,
                                               shape=(count, *shape))
            labels, start = None, 0
            for batch, batch_labels in data.iter_split(builder, split, image_size):
                images[start:start + len(batch)] = batch
                if batch_labels is not None:
                    if labels is None:
                        labels = np.lib.format.open_memmap(os.path.join(tmp, "labels.npy"), mode="w+",
                                                           dtype=np.int32, shape=(count,))
                    labels[start:start + len(batch)] = batch_labels
                start += len(batch)
            if start != count:
                raise ConfigError(f"split {split!r} of {builder.name!r} gave {start} images, expected {count}")
            images.flush()
            del images
            if labels is not None:
                labels.flush()
            with open(os.path.join(tmp, DONE_FILE), "w") as f:
                json.dump({"count": count, "shape": list(shape), "labels": labels is not None}, f)
            del labels
            if os.path.exists(path):  # An incomplete copy (no DONE_FILE) from a run that died.
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def local_rows(perm: np.ndarray, position: int, batch_size: int, process: int, processes: int) -> np.ndarray:
    """The example indices this process reads for the batch at ``position`` of an epoch whose
    order is ``perm``: its contiguous 1/processes of the global batch's rows (the rows its
    devices hold when the batch is sharded over a mesh of all devices, process by process)."""
    rows = perm[position * batch_size:(position + 1) * batch_size]
    local = batch_size // processes
    return rows[process * local:(process + 1) * local]


def subset(split: SplitFile, count: int, data_key: jax.Array) -> data.Split:
    """``count`` examples (all when fewer) in epoch 0's order, read into memory: what the loop
    fits the latent density on when the training split is streamed."""
    rows = np.sort(np.asarray(inputs.epoch_permutation(data_key, 0, len(split)))[:count])
    return data.Split(images=np.asarray(split.images[rows]),
                      labels=None if split.labels is None else np.asarray(split.labels[rows]))


class Feeder:
    """Chunks of training batches read from a :class:`SplitFile`, assembled one or more chunks
    ahead by a background thread and placed on the devices.

    ``chunks`` is the loop's plan of steps per call from ``start`` on; :meth:`next` returns the
    batches of the next chunk, {"image": uint8 (steps, B, H, W, C), "label"?: int32 (steps, B)},
    global arrays sharded over the mesh's ``data`` axis along B (``mesh`` None: on the default
    device). Must be :meth:`close`-d (it is a context manager).
    """

    def __init__(self, split: SplitFile, data_key: jax.Array, batch_size: int, start: int, chunks: list[int],
                 mesh: jax.sharding.Mesh | None = None):
        self.split, self.batch_size = split, batch_size
        self.steps_per_epoch = len(split) // batch_size
        self._data_key = data_key
        self._sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec(None, "data"))
        self._process, self._processes = jax.process_index(), jax.process_count()
        self._perm_epoch, self._perm = None, None
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(start, list(chunks)), daemon=True,
                                        name="jaxae-streaming")
        self._thread.start()

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.asarray(jax.device_get(inputs.epoch_permutation(self._data_key, epoch, len(self.split))))
            self._perm_epoch = epoch
        return self._perm

    def chunk(self, step: int, length: int) -> dict[str, np.ndarray]:
        """The host arrays of ``length`` steps from ``step``: this process's rows of each batch."""
        rows = []
        for s in range(step, step + length):
            epoch, position = divmod(s, self.steps_per_epoch)
            rows.append(local_rows(self._permutation(epoch), position, self.batch_size, self._process,
                                   self._processes))
        rows = np.stack(rows)                                   # (length, local batch)
        order = np.argsort(rows, axis=None)                     # Read the file front to back.
        flat = rows.reshape(-1)[order]
        images = np.empty((flat.size, *self.split.images.shape[1:]), np.uint8)
        images[order] = self.split.images[flat]
        batch = {"image": images.reshape(*rows.shape, *images.shape[1:])}
        if self.split.labels is not None:
            labels = np.empty(flat.size, np.int32)
            labels[order] = self.split.labels[flat]
            batch["label"] = labels.reshape(rows.shape)
        return batch

    def _place(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        if self._sharding is None:
            return jax.device_put(batch)
        return {name: jax.make_array_from_process_local_data(
                    self._sharding, value, (value.shape[0], value.shape[1] * self._processes, *value.shape[2:]))
                for name, value in batch.items()}

    def _produce(self, step: int, chunks: list[int]) -> None:
        try:
            for length in chunks:
                placed = self._place(self.chunk(step, length))
                step += length
                while not self._stop.is_set():
                    try:
                        self._queue.put(placed, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # Handed to the training thread, which raises it.
            self._queue.put(e)

    def next(self) -> dict[str, jax.Array]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> "Feeder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

