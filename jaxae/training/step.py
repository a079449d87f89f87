"""The one pure train step ``(state, batch, rng) -> (state, metrics)``, for every family
and every way of running it:

* plain ``jax.jit`` on one device;
* ``jax.jit`` over a ``jax.sharding.Mesh`` with a ``data`` axis (batch sharded, state
  replicated; XLA inserts the gradient all-reduce) — the default with several devices;
* ``jax.pmap`` with ``axis_name``: gradients and metrics are averaged with ``lax.pmean``.

Randomness is drawn per example from fold_in(rng, global example index)
(jaxae.inputs), so all three give the same numbers on the same global batch.

Gradient accumulation (``grad_accum`` K > 1) splits each device's batch into K
microbatches, computes their gradients one after another in a ``lax.scan`` (so only one
microbatch's activations are alive at a time) and applies one update with the mean
gradient. The keys are drawn for the whole batch before the split, so every example gets
the same noise as without accumulation and the update is the same up to float rounding,
for every objective that is a mean of per-example terms (all of them, except that
``free_bits`` is applied to each microbatch's batch-averaged KL).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxae import inputs
from jaxae.training.state import TrainState, ema_update


def global_norm(tree: Any) -> jax.Array:
    """sqrt of the sum of squares of all leaves."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def microbatches(tree: Any, num: int) -> Any:
    """Splits every leaf (B, ...) into ``num`` microbatches: (num, B / num, ...), microbatch j
    holding rows j, j + num, j + 2 num, ... Strided rather than contiguous so that a batch
    sharded in contiguous blocks over a mesh's ``data`` axis stays sharded the same way
    within every microbatch (each device contributes B / (num * devices) rows to each)."""
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1), tree)


def make_train_step(model, optimizer: optax.GradientTransformation, preprocess: inputs.Preprocessing | None = None,
                    axis_name: str | None = None, *, skip_threshold: float = 0.0, ema_decay: float = 0.0,
                    grad_accum: int = 1) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Returns the pure step ``(state, batch, rng) -> (state, metrics)``.

    model: a family (jaxae.families); preprocess: uint8 batch -> model batch in training
    mode (default: ``Preprocessing(model.spec)``, no augmentation or corruption).
    batch: {"image": uint8 (B, H, W, C), optional "label": int32 (B,)} — under ``pmap``
    the per-device shard. rng: a key shared by all devices. metrics: the scalars the
    family's loss returns (``loss`` and its parts, nats per image) averaged over the
    global batch, plus ``grad_norm``; ``nonfinite``: 1.0 when the loss or a gradient
    was NaN/Inf; ``skipped``: 1.0 when the update was skipped — params, optimizer state
    and moving average stay as they were — because it was non-finite or its gradient
    norm (before any clipping) exceeded ``skip_threshold`` (0: never); skips are counted
    in ``state.skipped``. Parameters outside ``model.trainable(params, step)`` (when not
    None) keep their values. With ``ema_decay`` > 0 the state must hold ``ema_params``,
    updated after each applied step as ema <- decay * ema + (1 - decay) * params.
    grad_accum: microbatches per (per-device) batch, which must divide it (see the module
    docstring); gradients and metrics are their means.
    """
    preprocess = preprocess or inputs.Preprocessing(model.spec)
    grad_fn = jax.value_and_grad(model.loss, has_aux=True)

    def gradients(params, model_batch: dict, keys: jax.Array, step: jax.Array):
        """((loss, metrics), grads) of the whole batch, over ``grad_accum`` microbatches."""
        if grad_accum == 1:
            return grad_fn(params, model_batch, keys, step)
        if keys.shape[0] % grad_accum:
            raise ValueError(f"a batch of {keys.shape[0]} does not split into {grad_accum} microbatches")

        def accumulate(total, micro):
            out = grad_fn(params, *micro, step)
            return jax.tree.map(jnp.add, total, out), None

        parts = microbatches((model_batch, keys), grad_accum)
        shapes = jax.eval_shape(grad_fn, params, *jax.tree.map(lambda x: x[0], parts), step)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(accumulate, zeros, parts)
        return jax.tree.map(lambda x: x / grad_accum, total)

    def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        keys = inputs.example_keys(rng, batch["image"].shape[0], axis_name=axis_name)
        model_batch = preprocess(batch, keys, train=True)
        (loss, metrics), grads = gradients(state.params, model_batch, keys, state.step)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
            loss = metrics["loss"]
        grad_norm = global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        apply = finite & (grad_norm <= skip_threshold) if skip_threshold else finite
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A family trained in stages freezes the others' parameters; the hook is optional, as
        # the step needs nothing but ``loss`` of any other model.
        hook = getattr(model, "trainable", None)
        trainable = None if hook is None else hook(state.params, state.step)
        if trainable is not None:
            params = jax.tree.map(lambda new, old, t: jnp.where(t, new, old), params, state.params, trainable)
        # A family with state that no gradient moves (vqvae's EMA codebook) sets it here, from
        # the step's batch under the step's own parameters; optional like ``trainable``.
        update_state = getattr(model, "update_state", None)
        if update_state is not None:
            params = update_state(state.params, params, model_batch, keys, axis_name)
        keep = lambda new, old: jnp.where(apply, new, old)  # noqa: E731
        params = jax.tree.map(keep, params, state.params)
        ema = state.ema_params
        if ema_decay:
            ema = jax.tree.map(keep, ema_update(ema, params, ema_decay), ema)
        new_state = TrainState(step=state.step + 1, params=params,
                               opt_state=jax.tree.map(keep, opt_state, state.opt_state),
                               skipped=state.skipped + (~apply).astype(jnp.int32), ema_params=ema)
        metrics = dict(metrics, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.float32),
                       skipped=(~apply).astype(jnp.float32))
        return new_state, metrics

    return train_step
