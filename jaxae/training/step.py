"""The one pure train step ``(state, batch, rng) -> (state, metrics)``, for every family
and every way of running it:

* plain ``jax.jit`` on one device;
* ``jax.jit`` over a ``jax.sharding.Mesh`` with a ``data`` axis (batch sharded, state
  replicated; XLA inserts the gradient all-reduce) — the default with several devices;
* ``jax.pmap`` with ``axis_name``: gradients and metrics are averaged with ``lax.pmean``.

Randomness is drawn per example from fold_in(rng, global example index)
(jaxae.inputs), so all three give the same numbers on the same global batch.
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


def make_train_step(model, optimizer: optax.GradientTransformation, preprocess: inputs.Preprocessing | None = None,
                    axis_name: str | None = None, *, skip_threshold: float = 0.0, ema_decay: float = 0.0
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
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
    in ``state.skipped``. With ``ema_decay`` > 0 the state must hold ``ema_params``,
    updated after each applied step as ema <- decay * ema + (1 - decay) * params.
    """
    preprocess = preprocess or inputs.Preprocessing(model.spec)

    def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        keys = inputs.example_keys(rng, batch["image"].shape[0], axis_name=axis_name)
        model_batch = preprocess(batch, keys, train=True)
        grad_fn = jax.value_and_grad(model.loss, has_aux=True)
        (loss, metrics), grads = grad_fn(state.params, model_batch, keys, state.step)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
            loss = metrics["loss"]
        grad_norm = global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        apply = finite & (grad_norm <= skip_threshold) if skip_threshold else finite
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
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
