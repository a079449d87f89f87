"""Densities fitted to a trained model's codes (ex-post density estimation, as in
Ghosh et al. 2020, "From variational to deterministic autoencoders").

After training, a full-covariance Gaussian — or, with ``latent_mixture K``, a K-component
Gaussian mixture — is fitted to the posterior means of the training images and stored
as ``prior.npz`` (plain arrays, loaded with ``allow_pickle=False``). ``sample.py --prior
fitted`` draws latents from it; for the deterministic ``ae`` it is the only way to sample.
"""

from __future__ import annotations

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxae import io
from jaxae.errors import ConfigError

PRIOR_FILE = "prior.npz"
JITTER = 1e-5  # Added to covariance diagonals so they stay positive definite.


@flax.struct.dataclass
class FittedPrior:
    """A Gaussian mixture: weights (K,), means (K, D), cholesky factors of covariances (K, D, D)."""

    weights: np.ndarray
    means: np.ndarray
    chols: np.ndarray

    @property
    def num_components(self) -> int:
        return len(self.weights)


def fit(codes: np.ndarray, num_components: int = 0, seed: int = 0) -> FittedPrior:
    """Fits a full-covariance Gaussian (num_components 0 or 1) or mixture to codes (N, D)."""
    codes = np.asarray(codes, np.float64)
    dim = codes.shape[1]
    if num_components <= 1:
        cov = np.cov(codes, rowvar=False).reshape(dim, dim) + JITTER * np.eye(dim)
        return FittedPrior(np.ones(1), codes.mean(0, keepdims=True), np.linalg.cholesky(cov)[None])
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(num_components, covariance_type="full", reg_covar=JITTER, random_state=seed,
                          max_iter=200).fit(codes)
    return FittedPrior(gmm.weights_, gmm.means_, np.linalg.cholesky(gmm.covariances_))


def sample(prior: FittedPrior, rng: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
    """Draws num latents (num, D): a component by its weight, then mean + temperature * L eps."""
    component_key, noise_key = jax.random.split(rng)
    k = jax.random.categorical(component_key, jnp.log(jnp.asarray(prior.weights, jnp.float32)), shape=(num,))
    eps = jax.random.normal(noise_key, (num, prior.means.shape[1]))
    means = jnp.asarray(prior.means, jnp.float32)[k]
    chols = jnp.asarray(prior.chols, jnp.float32)[k]
    return means + temperature * jnp.einsum("nij,nj->ni", chols, eps)


def save(workdir: str, prior: FittedPrior) -> None:
    with io.atomic_path(os.path.join(workdir, PRIOR_FILE), suffix=".npz") as tmp:
        np.savez(tmp, weights=prior.weights, means=prior.means, chols=prior.chols)


def load(workdir: str) -> FittedPrior | None:
    """The fitted prior of a work directory, or None if none was fitted."""
    path = os.path.join(workdir, PRIOR_FILE)
    if not os.path.exists(path):
        return None
    arrays = io.read_npz(path, "fitted prior")
    try:
        weights, means, chols = (np.asarray(arrays[k], np.float64) for k in ("weights", "means", "chols"))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"fitted prior {path!r} lacks weights, means and chols as numbers ({e})") from None
    k = weights.shape[0] if weights.ndim == 1 else -1
    if (k < 1 or means.ndim != 2 or means.shape[0] != k or chols.shape != (k, means.shape[1], means.shape[1])
            or not all(np.all(np.isfinite(a)) for a in (weights, means, chols))
            or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0)):
        raise ConfigError(f"fitted prior {path!r} is malformed: weights {weights.shape} must be K >= 1 finite "
                          f"probabilities, means (K, D) and chols (K, D, D); got means {means.shape}, chols "
                          f"{chols.shape}")
    return FittedPrior(weights, means, chols)
