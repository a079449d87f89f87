"""Training: the train state, the pure train step, and the train-and-evaluate loop.

The step ``train_step(state, batch, rng) -> (state, metrics)`` is one pure function
for every model family and every way of running it:

* plain ``jax.jit`` on one device;
* ``jax.jit`` over a ``jax.sharding.Mesh`` with a ``data`` axis (batch sharded,
  state replicated; XLA inserts the gradient all-reduce) — the default when several
  devices are visible;
* ``jax.pmap`` with ``axis_name``: gradients and metrics are averaged with
  ``lax.pmean``.

Randomness is drawn per example from fold_in(rng, global example index), so all
three give the same numbers on the same global batch.

The loop keeps the uint8 training split on the device and fuses
``steps_per_call`` steps into one compiled ``lax.scan``; the example order of every
epoch is a permutation derived from the seed and the epoch number, and the step's
key is fold_in(key, step). Resuming from a checkpoint therefore replays exactly the
same batches and noise as an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxae import checkpoints, data, distributed, evaluation, images, priors, sampling
from jaxae.cli import TrainingError
from jaxae.config import Config, ConfigError, validate
from jaxae.models import make_model

log = logging.getLogger(__name__)

PMAP_AXIS = "batch"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
NUM_GRID_SAMPLES = 64
NUM_GRID_RECONSTRUCTIONS = 32  # 4 rows of 8 inputs, each above its reconstructions.


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar; params and opt_state: pytrees of arrays; skipped: int32
    count of updates skipped because the loss or a gradient was not finite."""

    step: jax.Array
    params: Any
    opt_state: Any
    skipped: jax.Array


def make_optimizer(config: Config, total_steps: int) -> optax.GradientTransformation:
    """Adam with the configured learning-rate schedule and optional global-norm clipping."""
    if config.lr_schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, config.warmup_steps, max(total_steps, config.warmup_steps + 1))
    elif config.warmup_steps:
        lr = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
    else:
        lr = config.learning_rate
    adam = optax.adam(lr)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam) if config.grad_clip else adam


def create_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    params = model.init(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      skipped=jnp.zeros((), jnp.int32))


def global_norm(tree: Any) -> jax.Array:
    """sqrt of the sum of squares of all leaves."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def make_train_step(model, optimizer: optax.GradientTransformation, axis_name: str | None = None
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Returns the pure step ``(state, batch, rng) -> (state, metrics)``.

    batch: {"image": uint8 (B, H, W, C), optional "label": int32 (B,)} — under ``pmap``
    the per-device shard. rng: a key shared by all devices. metrics: scalars averaged
    over the global batch (``loss``, the family's objective, and its parts such as
    ``nelbo``, ``recon``, ``kl`` in nats per image; ``grad_norm``,
    and ``nonfinite``: 1.0 when the loss or a gradient was NaN/Inf, in which case the
    update is skipped — params and optimizer state stay as they were — and counted in
    ``state.skipped``).
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        keys = data.example_keys(rng, batch["image"].shape[0], axis_name=axis_name)
        grad_fn = jax.value_and_grad(model.loss, has_aux=True)
        (loss, metrics), grads = grad_fn(state.params, batch, keys, state.step)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
            loss = metrics["loss"]
        grad_norm = global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_state = TrainState(step=state.step + 1,
                               params=jax.tree.map(keep, params, state.params),
                               opt_state=jax.tree.map(keep, opt_state, state.opt_state),
                               skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = dict(metrics, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.float32))
        return new_state, metrics

    return train_step


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over all devices with the axis ``data``."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_multi_step(train_step, batch_size: int, num_examples: int, num_steps: int,
                    mesh: jax.sharding.Mesh | None = None, pmap_devices: int = 0):
    """Fuses ``num_steps`` train steps on device-resident data into one compiled call.

    Returns ``run(state, perm, images, labels, data_key, step_key) -> (state, perm, metrics)``
    where perm is the current epoch's permutation (int32 (N,)), images/labels the whole
    uint8 training split, and metrics hold (num_steps,) arrays. The step number in the
    state decides the epoch, the position in it and the step's key.

    mesh: shard each global batch over its ``data`` axis (jit + sharding). pmap_devices:
    instead run under ``jax.pmap`` over that many devices with axis ``batch`` (the step
    must be made with ``axis_name="batch"``); state and perm then carry a leading device
    axis, each device takes its rows of the global batch, and metrics are (devices, steps).
    """
    steps_per_epoch = num_examples // batch_size
    batch_sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec("data"))
    local = batch_size // pmap_devices if pmap_devices else batch_size

    def body(consts, carry, _):
        images, labels, data_key, step_key = consts
        state, perm = carry
        epoch, position = jnp.divmod(state.step, steps_per_epoch)
        perm = jax.lax.cond(position == 0,
                            lambda: data.epoch_permutation(data_key, epoch, num_examples),
                            lambda: perm)
        idx = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)
        if pmap_devices:
            idx = jax.lax.dynamic_slice_in_dim(idx, jax.lax.axis_index(PMAP_AXIS) * local, local)
        batch = {"image": images[idx]}
        if labels is not None:
            batch["label"] = labels[idx]
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        state, metrics = train_step(state, batch, jax.random.fold_in(step_key, state.step))
        return (state, perm), metrics

    def run(state, perm, images, labels, data_key, step_key):
        consts = (images, labels, data_key, step_key)
        if num_steps == 1:  # No loop: XLA:CPU runs convolutions inside a while loop ~50x slower.
            (state, perm), metrics = body(consts, (state, perm), None)
            return state, perm, jax.tree.map(lambda m: m[None], metrics)
        (state, perm), metrics = jax.lax.scan(functools.partial(body, consts), (state, perm), length=num_steps)
        return state, perm, metrics

    if pmap_devices:
        return jax.pmap(run, axis_name=PMAP_AXIS, in_axes=(0, 0, None, None, None, None), donate_argnums=(0, 1),
                        devices=jax.local_devices()[:pmap_devices])
    return jax.jit(run, donate_argnums=(0, 1))


def _chunk_lengths(start: int, total: int, boundaries: tuple[int, ...], max_len: int):
    """Yields step counts from ``start`` to ``total`` that never cross a multiple of a boundary."""
    step = start
    while step < total:
        stop = min([total, step + max_len] + [(step // b + 1) * b for b in boundaries])
        yield stop - step
        step = stop


def _nonfinite_streak(streak: int, flags: np.ndarray) -> int:
    """Consecutive non-finite steps up to the last of ``flags`` (1.0 = skipped), given the streak before."""
    for flag in flags:
        streak = streak + 1 if flag else 0
    return streak


def _append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: str, last_step: int) -> None:
    """Drops metric lines written after ``last_step`` (by a run that died before checkpointing)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def reset_workdir(workdir: str) -> None:
    """Removes a previous run's checkpoints, config and metrics from ``workdir``."""
    shutil.rmtree(checkpoints.checkpoint_dir(workdir), ignore_errors=True)
    for name in (checkpoints.CONFIG_FILE, METRICS_FILE):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            os.remove(path)


MAX_PARAMS = 1 << 30  # 4 GiB of float32 weights, 16 GiB with Adam's moments and gradients.


def check_model_size(model) -> int:
    """Counts parameters without allocating them; refuses absurd models before they exhaust memory."""
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
    if count > MAX_PARAMS:
        raise ConfigError(f"the model has {count:,} parameters, more than the {MAX_PARAMS:,} allowed; "
                          "reduce --hidden_dims, --channels or --latent_dim")
    return count


def check_workdir_writable(workdir: str) -> None:
    parent = workdir
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {workdir!r} cannot be created or written "
                          f"({parent!r} is not a writable directory)")


def encode_all(model, params, images: jax.Array, labels: jax.Array | None, batch_size: int = 1000) -> np.ndarray:
    """Posterior means (codes) of all images, (N, latent_dim), in batches."""
    encode = jax.jit(model.encode)
    return np.concatenate([
        np.asarray(encode(params, images[i:i + batch_size], None if labels is None else labels[i:i + batch_size])[0])
        for i in range(0, len(images), batch_size)])


def grid_labels(model, num: int) -> jax.Array | None:
    """Labels for a sample grid of a conditional model: rows of 8 cycling through the classes."""
    if not model.conditional:
        return None
    return (jnp.arange(num) // 8) % model.spec.num_classes


def write_images(model, params, test_images: jax.Array, test_labels: jax.Array | None, rng: jax.Array,
                 workdir: str, prior=None, writer=None, step: int = 0) -> None:
    """Writes samples.png (decoded prior latents: N(0, I), or the fitted prior for ``ae``) and
    reconstructions.png (rows of test inputs above their reconstructions)."""
    samples = np.asarray(sampling.sample_prior(model, params, rng, NUM_GRID_SAMPLES, 1.0,
                                               grid_labels(model, NUM_GRID_SAMPLES),
                                               prior if model.deterministic else None))
    inputs = test_images[:NUM_GRID_RECONSTRUCTIONS]
    labels = None if test_labels is None or not model.conditional else test_labels[:NUM_GRID_RECONSTRUCTIONS]
    recons = sampling.reconstruct(model, params, inputs, labels)
    pairs = np.asarray(sampling.interleave_rows(model.scaled_input(inputs), recons, 8))
    if not distributed.is_primary():  # Every process computes (the arrays span all devices); process 0 writes.
        return
    images.save_png(os.path.join(workdir, SAMPLES_FILE), samples, num_cols=8)
    images.save_png(os.path.join(workdir, RECONSTRUCTIONS_FILE), pairs, num_cols=8)
    if writer is not None:
        writer.add_image("samples", images.image_grid(samples, 8), step, dataformats="HWC")
        writer.add_image("reconstructions", images.image_grid(pairs, 8), step, dataformats="HWC")


def _describe(split: str, train: dict, test: dict, ips: float) -> str:
    if "nelbo" in test:
        return (f"train loss {train['loss']:.2f}, {split} nelbo {test['nelbo']:.2f} nats "
                f"({test['bpd']:.4f} bits/dim), recon {test['recon']:.2f}, kl {test['kl']:.2f}, {ips:,.0f} images/s")
    return f"train loss {train['loss']:.2f}, {split} loss {test['loss']:.2f}, recon {test['recon']:.2f} nats, " \
           f"{ips:,.0f} images/s"


def train_and_evaluate(config: Config, workdir: str, *, reset: bool = False,
                       progress: bool = True) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

    Writes config.json, checkpoints/, metrics.jsonl (one JSON object per evaluation),
    samples.png, reconstructions.png and TensorBoard events. Returns the last
    evaluation's metrics. Raises ConfigError, before writing anything, on bad input.
    With several processes (jaxae.distributed) every process calls this; only process 0
    writes files other than the (collective) checkpoints.
    """
    validate(config)
    check_workdir_writable(workdir)
    if not reset:
        checkpoints.check_resumable(workdir, config)
    if config.batch_size % jax.device_count():
        raise ConfigError(f"--batch_size {config.batch_size} must be divisible by the {jax.device_count()} devices")
    if config.parallel == "pmap" and jax.process_count() > 1:
        raise ConfigError(f"--parallel pmap runs on one process's devices; use --parallel sharded with "
                          f"{jax.process_count()} processes")

    builder = distributed.primary_first(lambda: data.prepared_builder(config), "prepare_dataset")
    train_split = data.load_split(builder, "train")
    test_split = data.load_split(builder, config.eval_split)
    if config.batch_size > len(train_split):
        raise ConfigError(f"--batch_size {config.batch_size} exceeds the {len(train_split)} training images")
    spec = data.input_spec(config, builder, train_split)
    model = make_model(config, spec)
    check_model_size(model)
    steps_per_epoch = len(train_split) // config.batch_size
    total_steps = config.epochs * steps_per_epoch if config.epochs else config.steps

    root = jax.random.key(config.seed)
    init_key, data_key, step_key, sample_key = (jax.random.fold_in(root, i) for i in range(4))
    optimizer = make_optimizer(config, total_steps)
    state = create_train_state(model, optimizer, init_key)
    num_devices = jax.device_count()
    pmap_devices = num_devices if config.parallel == "pmap" and num_devices > 1 else 0
    mesh = data_mesh() if num_devices > 1 and not pmap_devices else None
    replicated = NamedSharding(mesh, PartitionSpec()) if mesh else jax.devices()[0]
    # Placed before restoring, so Orbax restores straight into the (global) replicated sharding.
    state = distributed.put(state, replicated)

    primary = distributed.is_primary()
    if primary:
        if reset:
            reset_workdir(workdir)
        os.makedirs(workdir, exist_ok=True)
    distributed.barrier("workdir_ready")
    checkpointer = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
    restored = checkpointer.restore(state)
    start = 0
    if restored is not None:
        start, state = restored
        log.info("resuming from step %d of %s", start, checkpointer.directory)
    if primary:
        _truncate_metrics(os.path.join(workdir, METRICS_FILE), start)
        config.save(checkpoints.config_path(workdir))
        checkpoints.save_input_spec(workdir, spec)

    if pmap_devices:  # State and perm get a leading device axis; view() takes device 0's copy.
        per_device = NamedSharding(jax.sharding.Mesh(np.array(jax.local_devices()[:pmap_devices]), (PMAP_AXIS,)),
                                   PartitionSpec(PMAP_AXIS))
        stack = lambda tree: jax.device_put(  # noqa: E731
            jax.tree.map(lambda x: jnp.stack([x] * pmap_devices), tree), per_device)
        view = lambda tree: jax.device_put(jax.tree.map(lambda x: x[0], tree), jax.devices()[0])  # noqa: E731
        state = stack(state)
    else:
        stack = view = lambda tree: tree  # noqa: E731
    # Every process read the whole split: each places it on its own devices (jaxae.distributed).
    train_images, train_labels, test_images, test_labels = distributed.put(
        (train_split.images, train_split.labels, test_split.images, test_split.labels), replicated)
    epoch = start // steps_per_epoch
    perm = stack(jax.device_put(data.epoch_permutation(data_key, epoch, len(train_split)), replicated))

    writer = distributed.summary_writer(os.path.join(workdir, "tensorboard"))
    train_step = make_train_step(model, optimizer, axis_name=PMAP_AXIS if pmap_devices else None)
    runners: dict[int, Callable] = {}
    train_seconds, train_images_seen, streak = 0.0, 0, 0
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    bar = _progress_bar(total_steps, start, progress and primary)
    step = start
    for length in _chunk_lengths(start, total_steps, (config.eval_every, config.checkpoint_every),
                                 config.steps_per_call):
        compiled_before = length in runners
        if not compiled_before:
            runners[length] = make_multi_step(train_step, config.batch_size, len(train_split), length, mesh,
                                              pmap_devices)
        began = time.perf_counter()
        state, perm, metrics = runners[length](state, perm, train_images, train_labels, data_key, step_key)
        metrics = distributed.to_host(view(metrics))
        seconds = time.perf_counter() - began
        if compiled_before:  # The first call of each length includes compilation.
            train_seconds += seconds
            train_images_seen += length * config.batch_size
        step += length
        finite = metrics["nonfinite"] == 0
        for name, values in metrics.items():
            if name not in ("nonfinite", "grad_norm", "kl_weight"):
                window.setdefault(name, []).extend(values[finite].tolist())
        ips = train_images_seen / train_seconds if train_seconds else float("nan")
        if bar is not None:
            bar.update(length)
            bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.2f}", img_s=f"{ips:,.0f}")
        for name, values in metrics.items():
            writer.add_scalar(f"train/{name}", float(np.mean(values)), step)
        streak = _nonfinite_streak(streak, metrics["nonfinite"])
        if streak >= config.max_nonfinite:
            checkpointer.wait()
            good = checkpointer.latest_step()
            raise TrainingError(
                f"the loss or gradients were non-finite for {streak} consecutive steps (up to step {step}); "
                f"stopped (--max_nonfinite {config.max_nonfinite}); last good checkpoint: "
                f"{'none' if good is None else os.path.join(checkpointer.directory, str(good))}; "
                "lower --learning_rate or set --grad_clip")
        if step % config.eval_every == 0 or step == total_steps:
            params = view(state.params)
            test = evaluation.evaluate(model, params, test_images, data.eval_key(), labels=test_labels)
            train = {name: float(np.mean(values)) if values else float("nan") for name, values in window.items()}
            last = {"step": step, "epoch": step / steps_per_epoch,
                    **{f"train_{k}": v for k, v in train.items()},
                    "skipped_updates": int(view(state.skipped)),
                    **{f"test_{k}": v for k, v in test.items()},
                    "train_images_per_sec": ips}
            window = {}
            if primary:
                _append_jsonl(os.path.join(workdir, METRICS_FILE), last)
            for name, value in test.items():
                writer.add_scalar(f"test/{name}", value, step)
            if np.isfinite(ips):
                writer.add_scalar("train/images_per_sec", ips, step)
            fitted = priors.fit(encode_all(model, params, train_images, train_labels if model.conditional
                                           else None), config.latent_mixture, config.seed)
            if primary:
                priors.save(workdir, fitted)
            write_images(model, params, test_images, test_labels, sample_key, workdir, fitted, writer, step)
            message = f"step {step}/{total_steps}: " + _describe(config.eval_split, train, test, ips)
            if primary:
                (bar.write if bar is not None else print)(message)
        if step % config.checkpoint_every == 0 or step == total_steps:
            checkpointer.save(step, view(state))
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    if bar is not None:
        bar.close()
    if not last:  # Nothing left to train: evaluate the restored state.
        test = evaluation.evaluate(model, view(state.params), test_images, data.eval_key(), labels=test_labels)
        last = {"step": step, **{f"test_{k}": v for k, v in test.items()}}
    return last


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)
