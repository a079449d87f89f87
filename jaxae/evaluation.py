"""Evaluation over a whole split: negative ELBO, the IWAE bound on log p(x), bits per dim,
reconstruction error, active units and KL per latent dimension.

Conventions (as in Burda et al. 2015 and the VAE literature):
- nats per image: summed over pixels, averaged over images; bits/dim = nats / (D ln 2).
- ``nelbo``: -ELBO with the KL in closed form and one posterior sample for the
  reconstruction term.
- ``nll_iwae``: -log (1/k) sum_k w_k, w_k = p(x, z_k) / q(z_k | x), z_k ~ q(z | x): an upper
  bound on -log p(x) that tightens as k grows (k = 5000 in the literature).
- Every image is scored with its own key fold_in(rng, index), so the numbers do not
  depend on the batch size; its binarization (or dequantization) is the same for both
  bounds. The evaluation key is fixed (``inputs.eval_key``), independent of the run's seed.
- ``active_units``: latent dims u with Var_x(E_q[z_u | x]) > 0.01 (Burda et al.).
- ``mig``: when the data provides its factors of variation, the mutual information gap of
  the posterior means E_q[z | x] (jaxae.disentanglement).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import conditioning, distributed, hardware, inputs

ACTIVE_UNIT_THRESHOLD = 0.01


def bits_per_dim(nats_per_image: float, num_dims: int) -> float:
    """Nats per image -> bits per dimension: nats / (D * ln 2)."""
    return nats_per_image / (num_dims * math.log(2.0))


@functools.partial(hardware.jit, static_argnums=(0, 5))
def _log_weights_chunk(model, params, x, keys, start, chunk, cond):
    return model.log_weights(params, x, keys, chunk, start=start, cond=cond)


@hardware.jit
def _logsumexp_update(running_max, running_sum, log_w):
    new_max = jnp.maximum(running_max, jnp.max(log_w, axis=1))
    return new_max, running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max[:, None]), 1)


def iwae_log_likelihood(model, params, x: jax.Array, keys: jax.Array, num_samples: int,
                        chunk: int, cond: jax.Array | None = None) -> jax.Array:
    """IWAE estimate of log p(x) per example: log (1/k) sum_k w_k, with k = num_samples.

    x: float model input (B, H, W, C); keys: (B,). The k samples are drawn ``chunk`` at a
    time (chunk divides k), one compiled call per chunk, and folded into a running
    log-sum-exp, so memory does not grow with k; the result does not depend on ``chunk``.
    A host loop rather than ``lax.scan``: XLA:CPU runs convolutions inside loop bodies
    over 10x slower (see training.fused_steps), and per-call overhead is negligible
    next to a chunk. Returns (B,) nats.
    """
    if num_samples % chunk:
        raise ValueError(f"chunk {chunk} must divide num_samples {num_samples}")
    running_max, running_sum = jnp.full(x.shape[0], -jnp.inf), jnp.zeros(x.shape[0])
    for start in range(0, num_samples, chunk):
        log_w = _log_weights_chunk(model, params, x, keys, start, chunk, cond)
        running_max, running_sum = _logsumexp_update(running_max, running_sum, log_w)
    return running_max + jnp.log(running_sum) - math.log(num_samples)


def _eval_terms(model, params, batch, rng, offset):
    """The family's per-example terms on the clean model input, and that input."""
    keys = inputs.example_keys(rng, batch["image"].shape[0], offset)
    model_batch = inputs.Preprocessing(model.spec)(batch, keys, train=False)
    return model.eval_terms(params, model_batch, keys), model_batch, keys


@functools.partial(hardware.jit, static_argnums=0)
def _eval_batch(model, params, batch, mask, rng, offset):
    terms, _, _ = _eval_terms(model, params, batch, rng, offset)
    return {name: jnp.sum(value * mask) for name, value in terms.items() if value.ndim == 1}


@functools.partial(hardware.jit, static_argnums=0)
def _full_eval_batch(model, params, batch, rng, offset):
    """Every per-example number but the IWAE bound, and what that bound needs (x, keys, cond).

    For a model conditioned on a low-resolution image x_low (``conditioning.on_image``) also
    the PSNR (dB, per image) against x of x_low's fixed upsamplings (``psnr_nearest``,
    ``psnr_bicubic``) and, for a family with a prior of its own, of the super-resolved
    image: the decoder mean under x_low at the prior draw of temperature 0 (z = 0 for
    N(0, I); ``psnr_mean``) and at one prior draw z ~ p(z) from the example's key fold
    inputs.PRIOR_FOLD (``psnr_sample``). The encoder, which sees x, takes no part in them.
    """
    labels = batch.get("label")
    terms, model_batch, keys = _eval_terms(model, params, batch, rng, offset)
    x = model_batch["x"]
    given = model.given(x, labels)
    mean, _ = model.encode(params, x, labels)
    recon_mean = model.reconstruct(params, x, labels)
    out = dict(terms, mse=jnp.sum(jnp.square(recon_mean - x), axis=(1, 2, 3)), posterior_mean=mean)
    out.update({f"psnr_{name}": conditioning.psnr(up, x) for name, up in model.conditioning.baselines(given).items()})
    if model.conditioning.on_image and model.has_prior:
        modes = model.prior_draws(params, rng, x.shape[0], 0.0)
        out.update(psnr_mean=conditioning.psnr(model.decode(params, modes, given), x),
                   psnr_sample=conditioning.psnr(model.decode(params, model.example_prior_draws(params, keys), given),
                                                 x))
    return out, (x, keys, model.condition(given))


def _padded_batch(images, labels, start: int, batch_size: int) -> tuple[dict, int]:
    """Rows [start, start + batch_size) as a batch dict, zero-padded at the end; and the valid count."""
    batch = {"image": images[start:start + batch_size]}
    if labels is not None:
        batch["label"] = labels[start:start + batch_size]
    valid = len(batch["image"])
    if valid < batch_size:
        batch = {k: jnp.concatenate([v, jnp.zeros((batch_size - valid, *v.shape[1:]), v.dtype)])
                 for k, v in batch.items()}
    return batch, valid


def evaluate(model, params, images: jax.Array | np.ndarray, rng: jax.Array, batch_size: int = 500,
             labels: jax.Array | np.ndarray | None = None) -> dict[str, float]:
    """Mean per-example metrics of ``model.per_example`` over all ``images`` (uint8 (N, H, W, C)).

    ``labels`` (int (N,)) are needed by conditional models. The last batch is padded and
    masked; a split smaller than ``batch_size`` is one batch of its own size (not padded up to
    ``batch_size``). Returns nats per image (``nelbo``, ``recon``, ``kl``; ``loss`` and
    ``recon`` for ``ae``) and ``bpd`` = nelbo in bits/dim. Used by the training loop (fast, no IWAE).
    """
    num = len(images)
    batch_size = max(1, min(batch_size, num))
    totals: dict[str, float] = {}
    for start in range(0, num, batch_size):
        batch, valid = _padded_batch(images, labels, start, batch_size)
        mask = (jnp.arange(batch_size) < valid).astype(jnp.float32)
        sums = _eval_batch(model, params, batch, mask, rng, start)
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    metrics = {name: value / num for name, value in totals.items()}
    if "nelbo" in metrics:
        metrics["bpd"] = bits_per_dim(metrics["nelbo"], model.spec.num_dims)
    return metrics


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def evaluate_full(model, params, images: np.ndarray, rng: jax.Array, *, labels: np.ndarray | None = None,
                  factors: np.ndarray | None = None, iwae_samples: int = 5000, batch_size: int = 100,
                  chunk: int = 500, progress: bool = False) -> dict:
    """Everything the literature reports for a split of uint8 ``images`` (N, H, W, C).

    Returns ``nelbo``, ``recon``, ``kl``, ``nll_iwae`` (k = ``iwae_samples``; skipped when
    0) in nats per image, ``bpd`` and ``bpd_iwae``, ``mse`` (squared error of the
    family's ``reconstruct``, every stochastic layer at its posterior's code, per image), ``active_units``,
    ``kl_per_unit`` (list), plus ``num_images``, ``iwae_samples``, ``seconds`` and
    ``images_per_sec``; ``mig`` when ``factors`` (int (N, K), the images' known factors of
    variation) are given and the code has two or more dimensions. For a conditional model the
    bounds are on -log p(x | c), c named by ``conditional_on`` ('' when unconditional); a model
    conditioned on a low-res image adds the PSNRs of :func:`_full_eval_batch`. Batches are sharded
    over all devices (of every process, each of which must call this with the same arguments).
    For a family without a bound (``ae``) only ``loss``, ``recon``, ``mse`` and ``active_units`` apply.
    """
    num = len(images)
    if not model.bound:
        iwae_samples = 0
    chunk = largest_divisor_at_most(iwae_samples, chunk) if iwae_samples else 0
    sharding = distributed.batch_sharding(batch_size)
    if sharding is not None:
        params = distributed.put(params, distributed.replicated(sharding))
    sums: dict[str, np.ndarray] = {}
    means = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num, unit="img", desc=f"evaluating (IWAE k={iwae_samples})", dynamic_ncols=True)
    began = time.perf_counter()
    for start in range(0, num, batch_size):
        batch, valid = _padded_batch(images, labels, start, batch_size)
        if sharding is not None:
            batch = distributed.put(batch, sharding)
        out, (x, latent_keys, cond) = _full_eval_batch(model, params, batch, rng, start)
        if iwae_samples:
            out["log_px_iwae"] = iwae_log_likelihood(model, params, x, latent_keys, iwae_samples, chunk, cond)
        out = distributed.to_host(out)
        means.append(out.pop("posterior_mean")[:valid])
        for name, value in out.items():
            sums[name] = sums.get(name, 0.0) + np.sum(np.asarray(value, np.float64)[:valid], axis=0)
        if bar is not None:
            bar.update(valid)
    seconds = time.perf_counter() - began
    if bar is not None:
        bar.close()
    result = {name: (value / num).tolist() for name, value in sums.items()}
    if "nelbo" in result:
        result["bpd"] = bits_per_dim(result["nelbo"], model.spec.num_dims)
    if iwae_samples:
        result["nll_iwae"] = -result.pop("log_px_iwae")
        result["bpd_iwae"] = bits_per_dim(result["nll_iwae"], model.spec.num_dims)
    means = np.concatenate(means)
    variances = np.var(means, axis=0)
    if factors is not None and means.shape[1] >= 2:
        from jaxae import disentanglement

        result["mig"] = disentanglement.mig(means, factors)
    result.update(conditional_on=model.conditioning.describe(),
                  active_units=int(np.sum(variances > ACTIVE_UNIT_THRESHOLD)), num_images=num,
                  iwae_samples=iwae_samples, seconds=seconds, images_per_sec=num / seconds)
    if iwae_samples:
        result["iwae_flops_per_image"] = iwae_flops_per_image(model, params, images[:1], iwae_samples, chunk)
        result["achieved_flops_per_sec"] = result["iwae_flops_per_image"] * num / seconds
    return result


def iwae_flops_per_image(model, params, image: np.ndarray, iwae_samples: int, chunk: int) -> float:
    """FLOPs of the IWAE estimate for one image: XLA's count for one loop-free chunk, times k / chunk."""
    from jaxae.perf import flops_of

    x = inputs.to_model_input(jnp.asarray(image), jax.random.split(jax.random.key(0), 1), model.spec)
    keys = jax.random.split(jax.random.key(1), 1)
    cond = model.condition(model.given(x, jnp.zeros((1,), jnp.int32)))
    per_chunk = flops_of(lambda p, v, k: model.log_weights(p, v, k, chunk, cond=cond), params, x, keys)
    return per_chunk * iwae_samples / chunk
