"""beta-TCVAE (jaxae.families.btcvae, objectives.tc_decomposition): the minibatch-weighted
estimates of MI, TC and dimension-wise KL by numpy loops at random values, the loss by numpy at
random parameters, tc_weight 1 as the ELBO on the same sample, N from the input spec, and the
CLI path to ``mig`` on a dataset with factors."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_helpers import BINARY, binary_images, cross_entropy, f64, posterior_pieces, random_params

import evaluate
import train
from jaxae import data, disentanglement, inputs, objectives, workdir
from jaxae.config import Config
from jaxae.datasets import shapes
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.btcvae import BetaTCVAE

TINY = dict(model="btcvae", hidden_dims=(16,), latent_dim=3)
decompose = jax.jit(objectives.tc_decomposition, static_argnums=(3, 4))


def log_normal(x, mean, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / math.exp(logvar))


def weight(i, j, b, n, estimator):
    """w_ij by hand. mws: 1/(N B). mss, M = B - 1: 1/N for j = i, (N - M)/(N M) for the next member
    (the first after the last), 1/M for the others."""
    if estimator == "mws":
        return 1 / (n * b)
    m = b - 1
    return 1 / n if j == i else (n - m) / (n * m) if j == (i + 1) % b else 1 / m


def decomposition_by_loops(z, mean, logvar, n, estimator="mws"):
    """numpy loops: (mi, tc, dwkl) per example with q(z_i) ~ sum_j w_ij prod_d q(z_id|x_j) and
    q(z_id) ~ sum_j w_ij q(z_id|x_j), in plain exp/log."""
    z, mean, logvar = (np.asarray(a, np.float64) for a in (z, mean, logvar))
    b, d = z.shape
    out = []
    for i in range(b):
        q = [[math.exp(log_normal(z[i, k], mean[j, k], logvar[j, k])) for k in range(d)] for j in range(b)]
        w = [weight(i, j, b, n, estimator) for j in range(b)]
        log_qz = math.log(sum(w[j] * math.prod(q[j]) for j in range(b)))
        log_prod = sum(math.log(sum(w[j] * q[j][k] for j in range(b))) for k in range(d))
        log_qzx = math.log(math.prod(q[i]))
        log_pz = sum(log_normal(z[i, k], 0.0, 0.0) for k in range(d))
        out.append((log_qzx - log_qz, log_qz - log_prod, log_prod - log_pz))
    return np.array(out).T


def test_tc_decomposition_by_numpy_loops():
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=(5, 3)), rng.normal(scale=0.5, size=(5, 3))
    z = mean + np.exp(0.5 * logvar) * rng.normal(size=(5, 3))
    got = decompose(*(jnp.asarray(a, jnp.float32) for a in (z, mean, logvar)), 1000, "mws")
    want = decomposition_by_loops(z, mean, logvar, 1000)
    np.testing.assert_allclose([got["mi"], got["tc"], got["dwkl"]], want, rtol=1e-5, atol=1e-5)
    sampled_kl = [log_normal_sum - sum(log_normal(z[i, k], 0, 0) for k in range(3))
                  for i, log_normal_sum in enumerate(
                      sum(log_normal(z[i, k], mean[i, k], logvar[i, k]) for k in range(3)) for i in range(5))]
    np.testing.assert_allclose(got["mi"] + got["tc"] + got["dwkl"], sampled_kl, rtol=1e-5, atol=1e-5)
    # Bounds that hold for any values: q(z_i) >= q(z_i|x_i) / (N B) and TC <= (D - 1) log(N B).
    assert np.all(np.isfinite(want)) and np.all(want[0] <= math.log(5000) + 1e-6)
    assert np.all(want[1] <= 2 * math.log(5000) + 1e-6)
    one_dim = decompose(*(jnp.asarray(a[:, :1], jnp.float32) for a in (z, mean, logvar)), 1000, "mws")
    np.testing.assert_allclose(one_dim["tc"], 0.0, atol=1e-5)  # One latent: no correlation to total.
    # Far-apart, narrow posteriors: q(z_i) is q(z_i|x_i) / (N B), so MI per example is log(N B) > 0.
    apart = decompose(jnp.asarray(10.0 * mean), jnp.asarray(10.0 * mean),
                                        jnp.full((5, 3), -6.0), 1000, "mws")
    np.testing.assert_allclose(apart["mi"], math.log(5000), rtol=1e-4)


def test_mss_by_numpy_loops_rows_of_weight_one_and_no_offset():
    """Minibatch-stratified sampling against the loops, its weights (each row sums to 1, the
    (N - M)/(N M) cyclically right of the diagonal), and with identical posteriors q(z) is
    q(z|x) itself: mi = tc = 0 (MWS's mi is log N there)."""
    rng = np.random.default_rng(3)
    mean, logvar = rng.normal(size=(5, 3)), rng.normal(scale=0.5, size=(5, 3))
    z = mean + np.exp(0.5 * logvar) * rng.normal(size=(5, 3))
    got = decompose(*(jnp.asarray(a, jnp.float32) for a in (z, mean, logvar)), 1000, "mss")
    want = decomposition_by_loops(z, mean, logvar, 1000, "mss")
    np.testing.assert_allclose([got["mi"], got["tc"], got["dwkl"]], want, rtol=1e-5, atol=1e-5)
    assert np.abs(want - decomposition_by_loops(z, mean, logvar, 1000)).min() > 0.1  # Not MWS.
    w = np.exp(objectives.tc_log_weights(5, 1000, "mss"))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    assert w[4, 0] == w[0, 1] == pytest.approx(996 / 4000) and w[2, 2] == pytest.approx(1e-3) and w[3, 1] == 0.25
    same = [jnp.asarray(np.broadcast_to(a[:1], (5, 3)), jnp.float32) for a in (mean, logvar)]
    for estimator, mi in (("mss", 0.0), ("mws", math.log(1000))):
        terms = decompose(jnp.asarray(z, jnp.float32), *same, 1000, estimator)
        np.testing.assert_allclose(terms["mi"], mi, atol=1e-4)
        np.testing.assert_allclose(terms["tc"], 0.0 if estimator == "mss" else 2 * math.log(1000), atol=1e-4)
    for batch, n in ((1, 10), (5, 4)):
        with pytest.raises(ValueError, match=f"got B = {batch}, N = {n}"):
            objectives.tc_log_weights(batch, n, "mss")


def test_loss_by_numpy():
    spec = dataclasses.replace(BINARY, num_train=1000)
    models = (make_model(Config.create(tc_weight=4.0, **TINY), spec),
              make_model(Config.create(tc_weight=1.0, **TINY), spec),
              make_model(Config.create(tc_weight=4.0, **TINY), BINARY),  # num_train unknown: N = B.
              make_model(Config.create(tc_weight=4.0, tc_estimator="mss", **TINY), spec))
    assert isinstance(models[0], BetaTCVAE) and models[0].bound
    assert (models[0].tc_weight, models[0].dataset_size, models[2].dataset_size) == (4.0, 1000, 0)
    params = random_params(models[0], seed=40)
    x, keys = binary_images(6, seed=41), inputs.example_keys(jax.random.key(42), 6)
    mean, logvar, z, probs, losses = f64(posterior_pieces(models, params, x, keys))
    (loss, scalars), (elbo_like, _), (batch_n, _), (stratified, _) = losses
    recon = cross_entropy(probs, x)
    mi, tc, dwkl = decomposition_by_loops(z, mean, logvar, 1000)
    assert abs(3.0 * tc.mean()) > 0.1
    np.testing.assert_allclose(loss, np.mean(recon + mi + 4.0 * tc + dwkl), rtol=1e-5)
    np.testing.assert_allclose([scalars["mi"], scalars["tc"], scalars["dwkl"]], [mi.mean(), tc.mean(), dwkl.mean()],
                               rtol=1e-4, atol=1e-5)
    kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=1)
    np.testing.assert_allclose([scalars["nelbo"], scalars["kl"]], [(recon + kl).mean(), kl.mean()], rtol=1e-5)
    # tc_weight 1: the ELBO with the KL estimated on the same sample, log q(z|x) - log p(z).
    sampled_kl = np.sum(-0.5 * (logvar + (z - mean) ** 2 / np.exp(logvar)) + 0.5 * z**2, axis=1)
    np.testing.assert_allclose(elbo_like, np.mean(recon + sampled_kl), rtol=1e-5)
    mi6, tc6, dwkl6 = decomposition_by_loops(z, mean, logvar, 6)
    np.testing.assert_allclose(batch_n, np.mean(recon + mi6 + 4.0 * tc6 + dwkl6), rtol=1e-5)
    mi_s, tc_s, dwkl_s = decomposition_by_loops(z, mean, logvar, 1000, "mss")
    np.testing.assert_allclose(stratified, np.mean(recon + mi_s + 4.0 * tc_s + dwkl_s), rtol=1e-5)


def test_btcvae_config_rules():
    with pytest.raises(ConfigError, match="one stochastic layer"):
        make_model(Config.create(stochastic_layers=2, **TINY), BINARY)
    with pytest.raises(ConfigError, match="--tc_weight 2.0 is not used by --model vae"):
        make_model(Config.create(model="vae", tc_weight=2.0), BINARY)
    with pytest.raises(ConfigError, match="--tc_estimator mss is not used by --model vae"):
        make_model(Config.create(model="vae", tc_estimator="mss"), BINARY)


def test_evaluate_py_reports_mig_when_the_data_has_factors(tmp_path):
    rng = np.random.default_rng(0)
    factors = {split: np.stack([rng.integers(0, n, size) for n in shapes.FACTOR_SIZES], axis=1)
               for split, size in (("train", 64), ("test", 40))}
    splits = {split: data.Split(shapes.render(f, size=16), None, f) for split, f in factors.items()}
    path = str(tmp_path / "shapes16.npz")
    data.save_npz(path, splits, num_classes=0)
    assert np.array_equal(data.ArraySource.open(path).load("test").factors, factors["test"])
    run = str(tmp_path / "run")
    train.main(["--model", "btcvae", "--dataset", path, "--hidden_dims", "16", "--latent_dim", "3", "--steps", "2",
                "--eval_every", "2", "--checkpoint_every", "2", "--batch_size", "16", "--steps_per_call", "1",
                "--workdir", run])
    model, params, step = workdir.load_model(run)
    assert step == 2 and model.dataset_size == 64  # N: the training split's size, kept in the workdir.
    evaluate.main(["--workdir", run, "--iwae_samples", "0", "--batch_size", "20", "--no_progress"])
    with open(f"{run}/eval_test.json") as f:
        result = json.load(f)
    means, _ = model.encode(params, splits["test"].images.astype(np.float32))  # Binary data: the model input.
    assert result["num_images"] == 40
    assert result["mig"] == pytest.approx(disentanglement.mig(np.asarray(means), factors["test"]), abs=1e-6)
