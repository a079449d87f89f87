"""What the loop does besides stepping: metric records (metrics.jsonl and TensorBoard),
evaluation, the density fitted to the codes, image grids, and the progress bar. Only
process 0 writes files (jaxae.distributed)."""

from __future__ import annotations

import contextlib
import functools
import json
import os

import jax
import numpy as np

from jaxae import distributed, evaluation, hardware, images, inputs, io, priors, sampling, tensorboard
from jaxae import workdir as layout
from jaxae.errors import WriteError

NUM_GRID_SAMPLES = 64
NUM_GRID_RECONSTRUCTIONS = 32  # 4 rows of 8 inputs, each above its reconstructions.
QUIET_TRAIN_METRICS = ("nonfinite", "skipped", "grad_norm", "kl_weight")  # Logged per chunk, not averaged per eval.


class MetricsLog:
    """metrics.jsonl (one JSON object per evaluation) and TensorBoard scalars and images."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, layout.METRICS_FILE)
        self.primary = distributed.is_primary()
        self.writer = tensorboard.writer(os.path.join(workdir, layout.TENSORBOARD_DIR), self.primary)

    def truncate(self, last_step: int) -> None:
        """Drops records written after ``last_step`` (by a run that died before checkpointing),
        and lines that are not a record (a line cut short by a crash or a full disk)."""
        if not self.primary or not os.path.exists(self.path):
            return
        with open(self.path, errors="replace") as f:
            lines = f.readlines()
        steps = [_step_of(line) for line in lines]
        kept = [line.rstrip("\n") + "\n" for line, step in zip(lines, steps) if step is not None and step <= last_step]
        if kept != lines:
            with io.atomic_path(self.path) as tmp, open(tmp, "w") as f:
                f.writelines(kept)

    def train_chunk(self, metrics: dict[str, np.ndarray], step: int) -> None:
        for name, values in metrics.items():
            self.writer.add_scalar(f"train/{name}", float(np.mean(values)), step)

    def evaluation(self, record: dict, test: dict[str, float], step: int) -> None:
        if self.primary:
            with io.writing(self.path), open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for name, value in test.items():
            self.writer.add_scalar(f"test/{name}", value, step)
        if np.isfinite(record.get("train_images_per_sec", float("nan"))):
            self.writer.add_scalar("train/images_per_sec", record["train_images_per_sec"], step)
        self.writer.flush()

    def close(self) -> None:
        """Flushes and closes the TensorBoard file (WriteError if it cannot be written); idempotent."""
        writer, self.writer = self.writer, tensorboard.NullWriter()
        writer.close()

    def abandon(self) -> None:
        """Closes after a failure that is already being reported (write errors are dropped)."""
        with contextlib.suppress(WriteError):
            self.close()


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line, or None when the line is not a whole record."""
    try:
        record = json.loads(line)
        return int(record["step"]) if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def encode_all(model, params, images_: jax.Array, labels: jax.Array | None, batch_size: int = 1000) -> np.ndarray:
    """Posterior means (codes) of all uint8 images, (N, latent_dim), in batches."""
    encode = hardware.jit(functools.partial(sampling.encode, model))
    return np.concatenate([
        np.asarray(encode(params, images_[i:i + batch_size], None if labels is None else labels[i:i + batch_size]))
        for i in range(0, len(images_), batch_size)])


def fit_prior(model, params, train_images, train_labels, num_components: int, seed: int, workdir: str):
    """Fits the density of the training codes (jaxae.priors) and saves it as prior.npz."""
    fitted = priors.fit(encode_all(model, params, train_images, train_labels), num_components, seed)
    if distributed.is_primary():
        priors.save(workdir, fitted)
    return fitted


def grid_given(model, test_images: jax.Array, num: int) -> jax.Array | None:
    """The conditions of a sample grid in rows of 8 (``Conditioning.grid``): the classes in
    turn, or the low-res versions of the first test images, one per row; None if unconditional."""
    return model.conditioning.grid(num, inputs.scaled(test_images, model.spec), 8)


def write_images(model, params, test_images: jax.Array, test_labels: jax.Array | None, rng: jax.Array,
                 workdir: str, prior=None, log: MetricsLog | None = None, step: int = 0) -> None:
    """Writes samples.png (decoded prior draws: the family's prior, or the fitted prior for
    a family without one) and reconstructions.png (rows of test inputs above their
    reconstructions; 8 per row, fewer when the test split has fewer than 8 images)."""
    samples = np.asarray(sampling.sample_prior(model, params, rng, NUM_GRID_SAMPLES, 1.0,
                                               grid_given(model, test_images, NUM_GRID_SAMPLES),
                                               None if model.has_prior else prior))
    count = min(NUM_GRID_RECONSTRUCTIONS, test_images.shape[0])
    cols = min(8, count)
    shown = test_images[:count - count % cols]
    labels = None if test_labels is None else test_labels[:shown.shape[0]]
    recons = sampling.reconstruct(model, params, shown, labels)
    pairs = np.asarray(sampling.interleave_rows(inputs.scaled(shown, model.spec), recons, cols))
    if not distributed.is_primary():  # Every process computes (the arrays span all devices); process 0 writes.
        return
    images.save_png(os.path.join(workdir, layout.SAMPLES_FILE), samples, num_cols=8)
    images.save_png(os.path.join(workdir, layout.RECONSTRUCTIONS_FILE), pairs, num_cols=cols)
    if log is not None:
        log.writer.add_image("samples", images.image_grid(samples, 8), step)
        log.writer.add_image("reconstructions", images.image_grid(pairs, cols), step)


def evaluate(model, params, test_images, test_labels) -> dict[str, float]:
    """The held-out numbers logged during training (no IWAE: see evaluate.py for that)."""
    return evaluation.evaluate(model, params, test_images, inputs.eval_key(), labels=test_labels)


def describe(split: str, train: dict, test: dict, ips: float) -> str:
    """One progress line: the bound's parts when the family has one, else the loss; the speed when
    it was measured (nan when every step so far was in the first, compiling call)."""
    speed = f", {ips:,.0f} images/s" if np.isfinite(ips) else ""
    if "nelbo" in test:
        return (f"train loss {train['loss']:.2f}, {split} nelbo {test['nelbo']:.2f} nats "
                f"({test['bpd']:.4f} bits/dim), recon {test['recon']:.2f}, kl {test['kl']:.2f}{speed}")
    return f"train loss {train['loss']:.2f}, {split} loss {test['loss']:.2f}, recon {test['recon']:.2f} nats{speed}"


def progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)
