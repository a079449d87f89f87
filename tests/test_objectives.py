"""jaxae.objectives: the training objectives as pure functions of per-example terms, by hand.

How the families combine them (beta, warm-up, free bits, IWAE, the autoencoder's code
penalty, denoising) is tested per family under tests/families/.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import objectives


def test_kl_weight_warmup():
    assert float(objectives.kl_weight(0, 2.0, 0)) == 2.0
    assert float(objectives.kl_weight(10**6, 2.0, 0)) == 2.0
    assert float(objectives.kl_weight(0, 2.0, 100)) == 0.0
    assert float(objectives.kl_weight(25, 2.0, 100)) == pytest.approx(0.5)
    assert float(objectives.kl_weight(50, 2.0, 100)) == pytest.approx(1.0)
    assert float(objectives.kl_weight(500, 2.0, 100)) == pytest.approx(2.0)
    assert float(objectives.kl_weight(jnp.int32(30), 0.5, 60)) == pytest.approx(0.25)   # traced steps too


def test_elbo_loss_by_hand_with_free_bits():
    recon = jnp.array([10.0, 20.0])
    kl_per_dim = jnp.array([[0.1, 2.0], [0.3, 4.0]])   # batch means 0.2 and 3.0
    assert float(objectives.elbo_loss(recon, kl_per_dim)) == pytest.approx(15.0 + 3.2)
    assert float(objectives.elbo_loss(recon, kl_per_dim, 0.5)) == pytest.approx(15.0 + 1.6)
    # Free bits act on the batch mean of each unit: 0.2 is raised to 0.5, 3.0 is kept.
    assert float(objectives.elbo_loss(recon, kl_per_dim, 1.0, free_bits=0.5)) == pytest.approx(15.0 + 0.5 + 3.0)
    assert float(objectives.elbo_loss(recon, kl_per_dim, 2.0, free_bits=0.5)) == pytest.approx(15.0 + 2 * 3.5)
    # ... not per example: unit 0's per-example KLs (0.1, 0.3) are both below 0.25, the mean is too.
    assert float(objectives.elbo_loss(recon, kl_per_dim, 1.0, free_bits=0.25)) == pytest.approx(15.0 + 0.25 + 3.0)


def test_iwae_loss_by_hand():
    log_w = jnp.log(jnp.array([[1.0, 3.0], [2.0, 2.0]]))
    assert float(objectives.iwae_loss(log_w)) == pytest.approx(-(math.log(2.0) + math.log(2.0)) / 2)
    assert float(objectives.iwae_loss(log_w[:, :1])) == pytest.approx(-(0.0 + math.log(2.0)) / 2)
    # Large log-weights: computed stably (log-sum-exp), -mean_b [log mean_k w_bk].
    big = jnp.array([[-1000.0, -1001.0, -1003.0]])
    expected = -(-1000.0 + math.log((1 + math.exp(-1) + math.exp(-3)) / 3))
    assert float(objectives.iwae_loss(big)) == pytest.approx(expected, rel=1e-6)


def test_autoencoder_loss_by_hand():
    recon = jnp.array([3.0, 5.0])
    code = jnp.array([[1.0, 2.0], [0.0, -3.0]])              # squared norms 5 and 9
    assert float(objectives.autoencoder_loss(recon, code)) == pytest.approx(4.0)
    assert float(objectives.autoencoder_loss(recon, code, 0.1)) == pytest.approx(4.0 + 0.1 * 7.0)
    np.testing.assert_allclose(objectives.autoencoder_loss(recon, code, 1.0), 11.0, rtol=1e-6)
