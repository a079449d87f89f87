"""Disentanglement of a code with respect to known factors of variation (numpy, on the host).

``mig``: the mutual information gap (Chen et al. 2018): for each factor v_k, the mutual
information I(z_j; v_k) with every latent z_j, normalized by the factor's entropy H(v_k);
the gap between the largest and second largest normalized MI, averaged over the factors:

    MIG = (1/K) sum_k [I(z_j1; v_k) - I(z_j2; v_k)] / H(v_k),  j1, j2 the top two latents.

As in the common implementation of Locatello et al. (2019)'s study, z_j is the mean of
q(z|x), discretized into ``num_bins`` equal-width bins between its smallest and largest
value over the data, and every probability is an empirical frequency (plug-in estimates,
in nats). A factor that is constant on the data (entropy 0) is left out of the mean.
In [0, 1]: 1 when each factor is copied by exactly one latent and no other latent knows it.
"""

from __future__ import annotations

import numpy as np

NUM_BINS = 20


def discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Float (N, D) -> int (N, D): each column's bin among ``num_bins`` equal-width bins
    spanning its [min, max] (its largest value falls in the last bin)."""
    codes = np.asarray(codes, np.float64)
    low, high = codes.min(axis=0), codes.max(axis=0)
    width = np.where(high > low, (high - low) / num_bins, 1.0)
    return np.clip(np.floor((codes - low) / width), 0, num_bins - 1).astype(np.int64)


def _labels(values: np.ndarray) -> np.ndarray:
    """Any (N,) values -> int (N,) in 0..distinct-1."""
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def entropy(values: np.ndarray) -> float:
    """Plug-in entropy in nats of discrete values (N,)."""
    p = np.bincount(_labels(values)) / len(values)
    return float(-np.sum(p * np.log(p)))


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information in nats between discrete values a (N,) and b (N,), from
    their joint frequency table: sum_xy p(x, y) log(p(x, y) / (p(x) p(y)))."""
    a, b = _labels(a), _labels(b)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    seen = joint > 0
    return float(np.sum(joint[seen] * np.log(joint[seen] / outer[seen])))


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> float:
    """The mutual information gap of codes float (N, D), D >= 2, against discrete factors
    int (N, K); see the module docstring."""
    codes, factors = np.asarray(codes), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or codes.shape[1] < 2:
        raise ValueError(f"mig needs codes (N, D >= 2) and factors (N, K); got {codes.shape} and {factors.shape}")
    binned = discretize(codes, num_bins)
    gaps = []
    for k in range(factors.shape[1]):
        h = entropy(factors[:, k])
        if h == 0.0:
            continue
        mi = np.sort([mutual_information(binned[:, j], factors[:, k]) for j in range(codes.shape[1])])
        gaps.append((mi[-1] - mi[-2]) / h)
    if not gaps:
        raise ValueError("mig needs at least one factor that varies over the data")
    return float(np.mean(gaps))
