"""Training objectives as pure functions of per-example quantities (all in nats).

Each takes the terms a model computed for a batch and returns the scalar loss that
the train step minimises (averaged over the batch, nats per image). The families
(jaxae.families) combine them; nothing here knows the config.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import distributions as dist


def kl_weight(step: jax.Array | int, beta: float, warmup_steps: int) -> jax.Array:
    """beta, ramped linearly from 0 over the first ``warmup_steps`` steps (0: no ramp)."""
    if not warmup_steps:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)


def elbo_loss(recon: jax.Array, kl_per_dim: jax.Array, weight: jax.Array | float = 1.0,
              free_bits: float = 0.0) -> jax.Array:
    """(beta-)VAE loss: mean(recon) + weight * sum_d max(free_bits, mean_batch KL_d).

    recon: (B,) -log p(x|z); kl_per_dim: (B, D). With weight 1 and no free bits this is
    the negative ELBO. Free bits (Kingma et al. 2016) stop penalising a latent dim's
    batch-averaged KL below ``free_bits`` nats, which keeps units from collapsing.
    """
    kl = jnp.mean(kl_per_dim, axis=0)
    if free_bits:
        kl = jnp.maximum(kl, free_bits)
    return jnp.mean(recon) + weight * jnp.sum(kl)


def iwae_loss(log_weights: jax.Array) -> jax.Array:
    """IWAE loss (Burda et al. 2015): -mean_b [log (1/K) sum_k w_bk], log_weights (B, K).

    With K = 1 this is the single-sample negative ELBO; it tightens as K grows.
    """
    num = log_weights.shape[1]
    return -jnp.mean(jax.nn.logsumexp(log_weights, axis=1) - math.log(num))


def miwae_loss(log_weights: jax.Array, num_bounds: int) -> jax.Array:
    """MIWAE(M, K) loss (Rainforth et al. 2018): minus the mean of M independent K-sample IWAE
    bounds. log_weights (B, M * K), sample s = m * K + k belonging to bound m.

    M = 1 is ``iwae_loss``; K = 1 is the negative M-sample ELBO (the mean of the log-weights).
    """
    batch, total = log_weights.shape
    if total % num_bounds:
        raise ValueError(f"{total} samples do not split into {num_bounds} bounds")
    return iwae_loss(log_weights.reshape(batch * num_bounds, total // num_bounds))


def ciwae_loss(log_weights: jax.Array, beta: float | jax.Array) -> jax.Array:
    """CIWAE loss (Rainforth et al. 2018): -(beta ELBO_K + (1 - beta) IWAE_K) on the same K
    samples, log_weights (B, K); ELBO_K is the mean of the log-weights (``miwae_loss`` with
    M = K). beta = 1 is the negative ELBO, beta = 0 the IWAE loss."""
    elbo = miwae_loss(log_weights, log_weights.shape[1])
    return beta * elbo + (1.0 - beta) * iwae_loss(log_weights)


def imq_kernel(x: jax.Array, y: jax.Array, scale: float | jax.Array) -> jax.Array:
    """Inverse multiquadratic kernel k(x, y) = C / (C + ||x - y||^2): x (N, D), y (M, D) -> (N, M)."""
    sq_dist = jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)
    return scale / (scale + sq_dist)


def mmd_imq(x: jax.Array, y: jax.Array, prior_var: float = 1.0) -> jax.Array:
    """Unbiased (U-statistic) estimate of MMD^2 between the samples x (N, D) and y (N, D) with
    the inverse multiquadratic kernel of C = 2 D prior_var (Tolstikhin et al. 2018):

        1/(N(N-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/N^2 sum_{i, j} k(x_i, y_j).

    N >= 2. A scalar, which may be slightly negative (the estimate is unbiased).
    """
    n, dim = x.shape
    if n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples, got {n}")
    scale = 2.0 * dim * prior_var
    off_diagonal = 1.0 - jnp.eye(n)
    within = jnp.sum((imq_kernel(x, x, scale) + imq_kernel(y, y, scale)) * off_diagonal) / (n * (n - 1))
    return within - 2.0 * jnp.mean(imq_kernel(x, y, scale))


TC_ESTIMATORS = ("mws", "mss")


def tc_log_weights(batch: int, dataset_size: int, estimator: str = "mws") -> np.ndarray:
    """log w (B_i, B_j), float64: the weight of batch member j in the estimate of q(z_i),
    log q(z_i) ~ logsumexp_j [log q(z_i|x_j) + log w_ij] (Chen et al. 2018, appendix C).

    mws (minibatch-weighted sampling): w_ij = 1 / (N B) for every j, N = ``dataset_size``.
    mss (minibatch-stratified sampling), M = B - 1: w_ii = 1/N, w_i,i+1 (mod B) = (N - M) / (N M),
    every other w_ij = 1/M; each row sums to 1. (The authors' code gives the last row's
    (N - M) / (N M) to the row before it; here every row has the same form.) mss needs
    B >= 2 and N >= B.
    """
    if estimator == "mws":
        return np.full((batch, batch), -math.log(dataset_size * batch))
    if estimator != "mss":
        raise ValueError(f"estimator {estimator!r} is not one of {TC_ESTIMATORS}")
    if batch < 2 or dataset_size < batch:
        raise ValueError(f"mss needs a batch of 2 or more and a data set at least that large; got B = {batch}, "
                         f"N = {dataset_size}")
    m = batch - 1
    weights = np.full((batch, batch), 1.0 / m)
    rows = np.arange(batch)
    weights[rows, rows] = 1.0 / dataset_size
    weights[rows, (rows + 1) % batch] = (dataset_size - m) / (dataset_size * m)
    return np.log(weights)


def tc_decomposition(z: jax.Array, mean: jax.Array, logvar: jax.Array, dataset_size: int,
                     estimator: str = "mws") -> dict[str, jax.Array]:
    """The KL term of the ELBO split as in beta-TCVAE (Chen et al. 2018), per example (B,) in nats:

        mi   = log q(z_i|x_i) - log q(z_i)               (index-code mutual information)
        tc   = log q(z_i) - sum_d log q(z_id)            (total correlation)
        dwkl = sum_d log q(z_id) - log p(z_i)            (dimension-wise KL, p = N(0, I))

    for z_i ~ q(z|x_i) = N(mean_i, diag exp(logvar_i)), z, mean, logvar (B, D). The aggregate
    posterior q(z) = (1/N) sum_n q(z|x_n) of a data set of N = ``dataset_size`` images and its
    marginals q(z_d) are estimated on the batch with the weights of :func:`tc_log_weights`:
    log q(z_i) ~ logsumexp_j [log q(z_i|x_j) + log w_ij], log q(z_id) ~ logsumexp_j
    [log q(z_id|x_j) + log w_ij], j over the batch (i included). The three sum to
    log q(z_i|x_i) - log p(z_i), the one-sample estimate of KL(q(z|x_i) || p(z)).

    MWS (the paper's main text) weights every batch member 1/(N B), so its log q(z) is the
    batch's log-mean-exp less log N: next to the batch-mean estimates, mi is raised by log N,
    tc by (D - 1) log N and dwkl lowered by D log N. The offsets are constants (no gradient)
    and cancel in the sum, but the logged terms are not the true MI, TC and KL (e.g.
    tc ~ (D - 1) log N when the latents are independent). MSS's weights sum to 1 per row: no
    offset (identical posteriors give mi = tc = 0 exactly).
    """
    batch = z.shape[0]
    log_w = jnp.asarray(tc_log_weights(batch, dataset_size, estimator), z.dtype)      # (B_i, B_j)
    log_q_dims = dist.gaussian_log_prob(z[:, None, :], mean[None, :, :], logvar[None, :, :])  # (B_i, B_j, D)
    log_qz = jax.nn.logsumexp(jnp.sum(log_q_dims, axis=-1) + log_w, axis=1)
    log_prod_qzd = jnp.sum(jax.nn.logsumexp(log_q_dims + log_w[:, :, None], axis=1), axis=-1)
    log_qz_x = dist.diag_gaussian_log_prob(z, mean, logvar)
    log_pz = dist.standard_normal_log_prob(z)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod_qzd, "dwkl": log_prod_qzd - log_pz}


def autoencoder_loss(recon: jax.Array, code: jax.Array, code_l2: float = 0.0) -> jax.Array:
    """Deterministic autoencoder: mean(recon) + code_l2 * mean_b ||z_b||^2. recon (B,), code (B, D)."""
    return jnp.mean(recon) + code_l2 * jnp.mean(jnp.sum(jnp.square(code), axis=-1))
