"""MIG (jaxae.disentanglement) on hand-constructed codes with known answers (evaluate.py reporting
it for data with factors: tests/families/test_btcvae.py)."""

import itertools
import math

import numpy as np
import pytest

from jaxae import disentanglement

# Every combination of three factors with 4, 5 and 3 values, each 10 times: the factors are
# exactly independent in these data, so the plug-in MI between different ones is 0.
GRID = np.repeat(np.array(list(itertools.product(range(4), range(5), range(3)))), 10, axis=0)


def test_entropy_and_mutual_information_by_hand():
    assert disentanglement.entropy(GRID[:, 0]) == pytest.approx(math.log(4))
    assert disentanglement.mutual_information(GRID[:, 0], GRID[:, 0]) == pytest.approx(math.log(4))
    assert disentanglement.mutual_information(GRID[:, 0], GRID[:, 1]) == pytest.approx(0.0, abs=1e-12)
    # X uniform on 0..3, Y = X // 2: I = H(Y) = log 2.
    assert disentanglement.mutual_information(GRID[:, 0], GRID[:, 0] // 2) == pytest.approx(math.log(2))


def test_discretize_equal_width_bins():
    codes = np.array([[0.0, 5.0], [0.5, 5.0], [0.99, 5.0], [2.0, 5.0]])
    np.testing.assert_array_equal(disentanglement.discretize(codes, 4), [[0, 0], [1, 0], [1, 0], [3, 0]])


def test_mig_of_codes_that_copy_the_factors_is_one():
    codes = GRID.astype(np.float64) * np.array([0.3, -2.0, 7.0]) + 1.0   # Any affine copy of each factor.
    assert disentanglement.mig(codes, GRID) == pytest.approx(1.0)
    assert disentanglement.mig(codes[:, [2, 0, 1]], GRID) == pytest.approx(1.0)  # Permuted latents.


def test_mig_of_duplicated_and_coarse_latents_by_hand():
    f = GRID.astype(np.float64)
    # Factor 0 copied twice: gap 0; factors 1 and 2 copied once: gap 1 each -> (0 + 1 + 1) / 3.
    assert disentanglement.mig(np.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 2]], 1), GRID) == pytest.approx(2 / 3)
    # Factor 0 known only as f0 // 2 (I = log 2 of H = log 4), factor 1 copied, factor 2 unknown:
    # gaps (log 2 / log 4, 1, 0) -> (0.5 + 1 + 0) / 3.
    assert disentanglement.mig(np.stack([f[:, 0] // 2, f[:, 1]], 1), GRID) == pytest.approx(0.5)
    # A factor that does not vary is left out of the mean.
    constant = np.concatenate([GRID, np.zeros((len(GRID), 1), np.int64)], axis=1)
    assert disentanglement.mig(f, constant) == pytest.approx(1.0)


def test_mig_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 5, (20000, 3))
    assert disentanglement.mig(rng.normal(size=(20000, 4)), factors) < 0.01
