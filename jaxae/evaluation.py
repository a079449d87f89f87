"""Evaluation over a whole split: the negative ELBO in nats per image and bits per dim."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxae.data import example_keys


def bits_per_dim(nats_per_image: float, num_dims: int) -> float:
    """Nats per image -> bits per dimension: nats / (D * ln 2)."""
    return nats_per_image / (num_dims * math.log(2.0))


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(model, params, images, mask, rng, offset):
    keys = example_keys(rng, images.shape[0], offset)
    terms = model.per_example(params, images, keys)
    return {name: jnp.sum(value * mask) for name, value in terms.items()}


def evaluate(model, params, images: jax.Array | np.ndarray, rng: jax.Array,
             batch_size: int = 500) -> dict[str, float]:
    """Mean per-example metrics of ``model.per_example`` over all ``images`` (uint8 (N, H, W, C)).

    Every image is scored once with its own key fold_in(rng, index), so the result
    does not depend on ``batch_size``. The last batch is padded and masked. Returns
    nats per image (``nelbo``, ``recon``, ``kl``) and ``bpd`` = nelbo in bits/dim.
    """
    num = len(images)
    totals: dict[str, float] = {}
    for start in range(0, num, batch_size):
        chunk = images[start:start + batch_size]
        valid = len(chunk)
        if valid < batch_size:
            chunk = jnp.concatenate([chunk, jnp.zeros((batch_size - valid, *chunk.shape[1:]), chunk.dtype)])
        mask = (jnp.arange(batch_size) < valid).astype(jnp.float32)
        sums = _eval_batch(model, params, chunk, mask, rng, start)
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    metrics = {name: value / num for name, value in totals.items()}
    metrics["bpd"] = bits_per_dim(metrics["nelbo"], model.spec.num_dims)
    return metrics
