"""The train-and-evaluate loop around the one step (jaxae.training.step).

The loop keeps the uint8 training split on the device and fuses steps into compiled
calls (``lax.scan``; how many per call: jaxae.hardware); the example order of every
epoch is a permutation derived from the seed and the epoch number, and the step's key
is fold_in(key, step). Resuming from a checkpoint therefore replays exactly the same
batches and noise as an uninterrupted run. Chunks end at every evaluation and
checkpoint step; a signal stops training after the chunk in flight (interrupt.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxae import checkpoints, data, distributed, families, hardware, inputs, io, streaming
from jaxae import workdir as layout
from jaxae.config import Config, total_steps, validate
from jaxae.errors import ConfigError, TrainingError, WriteError
from jaxae.training import hooks
from jaxae.training.interrupt import StopRequest, save_on_interrupt
from jaxae.training.state import create_train_state, make_optimizer
from jaxae.training.step import make_train_step

log = logging.getLogger(__name__)

PMAP_AXIS = "batch"
MAX_PARAMS = 1 << 30  # 4 GiB of float32 weights, 16 GiB with Adam's moments and gradients.
PRIOR_FIT_IMAGES = 10_000  # Training images the latent density is fitted on when the split is streamed.


def make_multi_step(train_step, batch_size: int, num_examples: int, num_steps: int,
                    mesh: jax.sharding.Mesh | None = None, pmap_devices: int = 0, streamed: bool = False):
    """Fuses ``num_steps`` train steps on device-resident data into one compiled call.

    Returns ``run(state, perm, images, labels, data_key, step_key) -> (state, perm, metrics)``
    where perm is the current epoch's permutation (int32 (N,)), images/labels the whole
    uint8 training split, and metrics hold (num_steps,) arrays. The step number in the
    state decides the epoch, the position in it and the step's key.

    streamed: images/labels are instead the call's batches, uint8 (num_steps, B, H, W, C) and
    int32 (num_steps, B) (jaxae.streaming.Feeder, which reads the same rows of the same
    permutation from disk); perm is carried through unused.

    mesh: shard each global batch over its ``data`` axis (jit + sharding). pmap_devices:
    instead run under ``jax.pmap`` over that many devices with axis ``batch`` (the step
    must be made with ``axis_name="batch"``); state and perm then carry a leading device
    axis, each device takes its rows of the global batch, and metrics are (devices, steps).
    """
    steps_per_epoch = num_examples // batch_size
    batch_sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec("data"))
    local = batch_size // pmap_devices if pmap_devices else batch_size

    def body(consts, carry, streamed_batch):
        images, labels, data_key, step_key = consts
        state, perm = carry
        if streamed:
            batch = streamed_batch
        else:
            epoch, position = jnp.divmod(state.step, steps_per_epoch)
            perm = jax.lax.cond(position == 0,
                                lambda: inputs.epoch_permutation(data_key, epoch, num_examples),
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
        xs = None
        if streamed:
            xs = {"image": images} if labels is None else {"image": images, "label": labels}
            images = labels = None
        consts = (images, labels, data_key, step_key)
        if num_steps == 1:  # No loop at all (see jaxae.hardware): metrics still get their (1,) step axis.
            (state, perm), metrics = body(consts, (state, perm), jax.tree.map(lambda x: x[0], xs))
            return state, perm, jax.tree.map(lambda m: m[None], metrics)
        (state, perm), metrics = jax.lax.scan(functools.partial(body, consts), (state, perm), xs=xs,
                                              length=num_steps)
        return state, perm, metrics

    if pmap_devices:
        return jax.pmap(run, axis_name=PMAP_AXIS, in_axes=(0, 0, None, None, None, None), donate_argnums=(0, 1),
                        devices=jax.local_devices()[:pmap_devices])
    return jax.jit(run, donate_argnums=(0, 1), compiler_options=hardware.compiler_options())


def chunk_lengths(start: int, total: int, boundaries: tuple[int, ...], max_len: int):
    """Yields step counts from ``start`` to ``total`` that never cross a multiple of a boundary."""
    step = start
    while step < total:
        stop = min([total, step + max_len] + [(step // b + 1) * b for b in boundaries])
        yield stop - step
        step = stop


def nonfinite_streak(streak: int, flags: np.ndarray) -> int:
    """Consecutive flagged steps (non-finite, or skipped) up to the last of ``flags`` (1.0 = flagged),
    given the streak before."""
    for flag in flags:
        streak = streak + 1 if flag else 0
    return streak


def check_model_size(model) -> int:
    """Counts parameters without allocating them; refuses absurd models before they exhaust memory."""
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
    if count > MAX_PARAMS:
        raise ConfigError(f"the model has {count:,} parameters, more than the {MAX_PARAMS:,} allowed; "
                          "reduce --hidden_dims, --channels or --latent_dim")
    return count


def _last_good(checkpointer: checkpoints.Checkpointer) -> str:
    try:
        checkpointer.wait()
    except WriteError:  # The save in flight failed: the newest complete one is the last good one.
        pass
    good = checkpointer.latest_step()
    return f"last good checkpoint: {'none' if good is None else os.path.join(checkpointer.directory, str(good))}"


def streams(data_config, builder) -> bool:
    """Whether the training split is streamed (jaxae.streaming) rather than held on the device:
    --input streaming, or --input auto and the split is larger than --resident_limit_mib."""
    if data_config.input != "auto":
        return data_config.input == "streaming"
    count, shape = data.split_size(builder, data_config.train_split, data_config.image_size)
    return count * math.prod(shape) > data_config.resident_limit_mib << 20


def _check(config: Config, workdir: str, reset: bool) -> None:
    """Everything that can be refused before reading data or writing anything."""
    families.check_config(validate(config))
    layout.check_writable(workdir)
    if not reset:
        layout.check_resumable(workdir, config)
    if config.run.batch_size % (jax.device_count() * config.run.grad_accum):
        raise ConfigError(f"--batch_size {config.run.batch_size} must be divisible by the "
                          f"{jax.device_count()} devices" + (f" times --grad_accum {config.run.grad_accum}"
                                                             if config.run.grad_accum > 1 else ""))
    if config.run.parallel == "pmap" and jax.process_count() > 1:
        raise ConfigError(f"--parallel pmap runs on one process's devices; use --parallel sharded with "
                          f"{jax.process_count()} processes")


def train_and_evaluate(config: Config, workdir: str, *, reset: bool = False,
                       progress: bool = True) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

    Writes config.json, input_spec.json, checkpoints/, metrics.jsonl (one JSON object per
    evaluation), prior.npz, samples.png, reconstructions.png and TensorBoard events
    (jaxae.workdir). Returns the last evaluation's record. Raises ConfigError, before
    writing anything, on bad input. With several processes (jaxae.distributed) every
    process calls this; only process 0 writes files other than the (collective) checkpoints.
    """
    _check(config, workdir, reset)
    run, d = config.run, config.data
    root = jax.random.key(run.seed)
    init_key, data_key, step_key, sample_key = (jax.random.fold_in(root, i) for i in range(4))
    limit = d.resident_limit_mib << 20
    builder = distributed.primary_first(lambda: data.prepared_builder(d), "prepare_dataset")
    stream = None
    if streams(d, builder):  # train_split: what the latent density is fitted on (hooks.fit_prior).
        if run.parallel == "pmap" and jax.device_count() > 1:
            raise ConfigError("the training split is streamed (--input), which feeds a device mesh; use "
                              "--parallel sharded (the default)")
        stream = distributed.primary_first(
            lambda: streaming.open_split(builder, d.train_split, d.image_size, d.data_dir), "prepare_stream")
        train_split, num_train = streaming.subset(stream, PRIOR_FIT_IMAGES, data_key), len(stream)
    else:
        train_split = data.load_split(builder, d.train_split, d.image_size, limit)
        num_train = len(train_split)
    test_split = data.load_split(builder, d.eval_split, d.image_size, limit)
    if run.batch_size > num_train:
        raise ConfigError(f"--batch_size {run.batch_size} exceeds the {num_train} training images")
    spec = data.input_spec(d, config.model, builder, train_split, num_train)
    model = families.make_model(config, spec)
    check_model_size(model)
    steps_per_epoch = num_train // run.batch_size
    total = total_steps(config, num_train)
    optimizer = make_optimizer(config.optimizer, total, steps_per_epoch)
    state = create_train_state(model, optimizer, init_key, ema=config.optimizer.ema_decay > 0)
    num_devices = jax.device_count()
    pmap_devices = num_devices if run.parallel == "pmap" and num_devices > 1 else 0
    mesh = distributed.data_mesh() if num_devices > 1 and not pmap_devices else None
    replicated = NamedSharding(mesh, PartitionSpec()) if mesh else jax.devices()[0]
    # Placed before restoring, so Orbax restores straight into the (global) replicated sharding.
    state = distributed.put(state, replicated)

    with contextlib.ExitStack() as locked:
        primary = distributed.is_primary()
        if primary:  # One lock per run: process 0 holds it for all.
            with io.writing(workdir):
                os.makedirs(workdir, exist_ok=True)
            locked.enter_context(layout.lock(workdir))
            if reset:
                layout.reset(workdir)
        distributed.barrier("workdir_ready")
        checkpointer = checkpoints.Checkpointer(workdir, keep=run.keep_checkpoints)
        locked.callback(checkpointer.abandon)  # Closed below on success; on any failure, quietly.
        restored = checkpointer.restore(state)
        start = 0
        if restored is not None:
            start, state = restored
            log.info("resuming from step %d of %s", start, checkpointer.directory)
        elif checkpointer.steps():  # Training from scratch would delete them (--keep_checkpoints).
            raise ConfigError(f"--workdir {workdir!r}: no checkpoint in {checkpointer.directory!r} is readable "
                              f"(steps {checkpointer.steps()}); move them away, or pass --reset to start over")
        metrics_log = hooks.MetricsLog(workdir)
        locked.callback(metrics_log.abandon)
        metrics_log.truncate(start)
        if primary:
            config.save(layout.config_path(workdir))
            layout.save_input_spec(workdir, spec)

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
        if stream is None:
            perm = stack(jax.device_put(inputs.epoch_permutation(data_key, start // steps_per_epoch, num_train),
                                        replicated))
        else:  # Carried through the fused call unused: the feeder reads the permutation's rows.
            perm = distributed.put(np.zeros(1, np.int32), replicated)

        preprocess = inputs.Preprocessing(spec, config.data.hflip, config.data.input_noise, config.data.noise_level,
                                          config.data.random_crop)
        train_step = make_train_step(model, optimizer, preprocess, axis_name=PMAP_AXIS if pmap_devices else None,
                                     skip_threshold=config.optimizer.skip_threshold,
                                     ema_decay=config.optimizer.ema_decay, grad_accum=run.grad_accum)
        runners: dict[int, Callable] = {}
        train_seconds, train_images_seen, streak, skipped_streak = 0.0, 0, 0, 0
        window: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        bar = hooks.progress_bar(total, start, progress and primary)
        step = start
        stop = StopRequest()
        chunks = list(chunk_lengths(start, total, (run.eval_every, run.checkpoint_every),
                                    hardware.steps_per_call(run.steps_per_call, model.convolutional)))
        feeder = None
        if stream is not None:
            feeder = locked.enter_context(streaming.Feeder(stream, data_key, run.batch_size, start, chunks, mesh))
        try:
            for chunk, length in enumerate(chunks):
                compiled_before = length in runners
                if not compiled_before:
                    runners[length] = make_multi_step(train_step, run.batch_size, num_train, length, mesh,
                                                      pmap_devices, streamed=feeder is not None)
                began = time.perf_counter()
                images, labels = train_images, train_labels
                if feeder is not None:
                    batches = feeder.next()
                    images, labels = batches["image"], batches.get("label")
                state, perm, metrics = runners[length](state, perm, images, labels, data_key, step_key)
                metrics = distributed.to_host(view(metrics))
                seconds = time.perf_counter() - began
                if compiled_before:  # The first call of each length includes compilation.
                    train_seconds += seconds
                    train_images_seen += length * run.batch_size
                step += length
                applied = metrics["skipped"] == 0
                for name, values in metrics.items():
                    if name not in hooks.QUIET_TRAIN_METRICS:
                        window.setdefault(name, []).extend(values[applied].tolist())
                ips = train_images_seen / train_seconds if train_seconds else float("nan")
                if bar is not None:
                    bar.update(length)
                    bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.2f}", img_s=f"{ips:,.0f}")
                metrics_log.train_chunk(metrics, step)
                streak = nonfinite_streak(streak, metrics["nonfinite"])
                skipped_streak = nonfinite_streak(skipped_streak, metrics["skipped"])
                if streak >= run.max_nonfinite:
                    raise TrainingError(
                        f"the loss or gradients were non-finite for {streak} consecutive steps (up to step {step}); "
                        f"stopped (--max_nonfinite {run.max_nonfinite}); {_last_good(checkpointer)}; "
                        "lower --learning_rate or set --grad_clip")
                if run.max_skipped and skipped_streak >= run.max_skipped:
                    raise TrainingError(
                        f"{skipped_streak} consecutive updates were skipped (up to step {step}; non-finite, or "
                        f"gradient norm over --skip_threshold {config.optimizer.skip_threshold}); stopped "
                        f"(--max_skipped {run.max_skipped}); {_last_good(checkpointer)}; raise --skip_threshold "
                        "or lower --learning_rate")
                if step % run.eval_every == 0 or step == total:
                    params = view(state.eval_params())
                    test = hooks.evaluate(model, params, test_images, test_labels)
                    train = {name: float(np.mean(values)) if values else float("nan")
                             for name, values in window.items()}
                    last = {"step": step, "epoch": step / steps_per_epoch,
                            **{f"train_{k}": v for k, v in train.items()},
                            "skipped_updates": int(view(state.skipped)), **{f"test_{k}": v for k, v in test.items()},
                            "train_images_per_sec": ips}
                    window = {}
                    metrics_log.evaluation(last, test, step)
                    fitted = hooks.fit_prior(model, params, train_images, train_labels, config.model.latent_mixture,
                                             run.seed, workdir)
                    hooks.write_images(model, params, test_images, test_labels, sample_key, workdir, fitted,
                                       metrics_log, step)
                    message = f"step {step}/{total}: " + hooks.describe(config.data.eval_split, train, test, ips)
                    if primary:
                        (bar.write if bar is not None else print)(message)
                if step % run.checkpoint_every == 0 or step == total:
                    checkpointer.save(step, view(state))
                if distributed.stop_agreed(stop.requested, chunk):
                    raise KeyboardInterrupt
            checkpointer.close()
            metrics_log.close()
        except KeyboardInterrupt:  # Ctrl-C, timeout -s INT, SIGTERM (preemption): keep the progress.
            save_on_interrupt(checkpointer, view(state))
            raise
        except WriteError as e:  # Full disk and the like: the checkpoints Orbax completed are intact.
            raise WriteError(f"{e}; {_last_good(checkpointer)}; rerun the same command to resume once it can "
                             "be written") from None
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
        if not last:  # Nothing left to train: evaluate the restored state.
            test = hooks.evaluate(model, view(state.eval_params()), test_images, test_labels)
            last = {"step": step, **{f"test_{k}": v for k, v in test.items()}}
        return last
