"""The one pure train step (jaxae.training.step): the same numbers under jit, pmap and
jit over a mesh; skipped updates (non-finite, or above the skip threshold) change nothing
but the counters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxae import inputs, training
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families import make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")
CONFIG = Config.create(latent_dim=4, hidden_dims=(32,), learning_rate=3e-3)
NUM_DEVICES = 4


@pytest.fixture(scope="module")
def setup():
    """(model, optimizer, state, jitted plain step), built and compiled once for the module."""
    model = make_model(CONFIG, SPEC)
    optimizer = training.make_optimizer(CONFIG.optimizer, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    return model, optimizer, state, jax.jit(training.make_train_step(model, optimizer))


def _batches(mnist5k, num, batch_size=32):
    images = mnist5k[1].images
    return [{"image": jnp.asarray(images[i * batch_size:(i + 1) * batch_size])} for i in range(num)]


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_pmap_step_matches_jit_step_on_the_same_global_batch(mnist5k, setup):
    assert jax.device_count() >= NUM_DEVICES, "conftest sets 4 fake CPU devices"
    model, optimizer, state, jit_step = setup
    pmap_step = jax.pmap(training.make_train_step(model, optimizer, axis_name=training.PMAP_AXIS),
                         axis_name=training.PMAP_AXIS, in_axes=(0, 0, None), devices=jax.devices()[:NUM_DEVICES])
    replicated = jax.tree.map(lambda x: jnp.stack([x] * NUM_DEVICES), state)
    single = state
    for i, batch in enumerate(_batches(mnist5k, 3)):
        rng = jax.random.key(10 + i)
        single, m1 = jit_step(single, batch, rng)
        shards = jax.tree.map(lambda x: x.reshape(NUM_DEVICES, -1, *x.shape[1:]), batch)
        replicated, m2 = pmap_step(replicated, shards, rng)
        assert set(m1) == set(m2)
        for name in ("loss", "nelbo", "recon", "kl", "grad_norm"):
            np.testing.assert_allclose(m1[name], m2[name][0], rtol=1e-5)
    _assert_trees_close(single.params, jax.tree.map(lambda x: x[0], replicated.params))
    _assert_trees_close(single.opt_state, jax.tree.map(lambda x: x[0], replicated.opt_state))
    assert int(replicated.step[0]) == int(single.step) == 3
    # A NaN on one device only: the averaged gradient is NaN everywhere, so every device skips alike.
    poisoned = replicated.replace(params=jax.tree.map(lambda p: p.at[(1,) + (0,) * (p.ndim - 1)].set(jnp.nan),
                                                      replicated.params))
    after, metrics = pmap_step(poisoned, shards, jax.random.key(0))
    assert metrics["skipped"].tolist() == metrics["nonfinite"].tolist() == [1.0] * NUM_DEVICES
    assert after.skipped.tolist() == [1] * NUM_DEVICES and after.step.tolist() == [4] * NUM_DEVICES
    _assert_trees_equal((after.params, after.opt_state), (poisoned.params, poisoned.opt_state))


@pytest.mark.parametrize("num_devices", [2, 4])
def test_sharded_jit_matches_single_device(mnist5k, setup, num_devices):
    model, optimizer, state, jit_step = setup
    step = training.make_train_step(model, optimizer)
    mesh = jax.make_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices])
    sharded_step = jax.jit(step, in_shardings=(NamedSharding(mesh, PartitionSpec()),
                                               NamedSharding(mesh, PartitionSpec("data")), None))
    single, sharded = state, state
    for i, batch in enumerate(_batches(mnist5k, 2)):
        single, m1 = jit_step(single, batch, jax.random.key(i))
        sharded, m2 = sharded_step(sharded, batch, jax.random.key(i))
        for name in ("loss", "nelbo", "grad_norm"):
            np.testing.assert_allclose(m1[name], m2[name], rtol=1e-5)
    _assert_trees_close(single.params, sharded.params)


def test_step_metrics_counters_and_determinism(mnist5k, setup):
    """One applied step: step +1, nothing skipped, the family's scalars plus grad_norm,
    nonfinite and skipped; the same inputs give bit-identical outputs."""
    model, optimizer, state, step = setup
    batch = _batches(mnist5k, 1)[0]
    new, metrics = step(state, batch, jax.random.key(3))
    assert {"loss", "nelbo", "recon", "kl", "kl_weight", "grad_norm", "nonfinite", "skipped"} <= set(metrics)
    assert int(new.step) == 1 and int(new.skipped) == 0
    assert float(metrics["nonfinite"]) == 0.0 and float(metrics["skipped"]) == 0.0
    np.testing.assert_allclose(metrics["nelbo"], metrics["recon"] + metrics["kl"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], metrics["nelbo"], rtol=1e-6)  # vae, beta 1: the NELBO.
    assert float(metrics["grad_norm"]) > 0
    assert not np.array_equal(jax.tree.leaves(new.params)[0], jax.tree.leaves(state.params)[0])
    again, metrics_again = step(state, batch, jax.random.key(3))
    _assert_trees_equal(new, again)
    _assert_trees_equal(metrics, metrics_again)


def test_loss_decreases_on_real_digits(mnist5k, setup):
    model, optimizer, state, step = setup
    losses = []
    for i, batch in enumerate(_batches(mnist5k, 60)):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["nelbo"]))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3]), losses


def test_nonfinite_gradient_skips_the_update_and_is_counted(mnist5k, setup):
    model, optimizer, state, step = setup
    batch = _batches(mnist5k, 1)[0]
    good, metrics = step(state, batch, jax.random.key(0))
    assert float(metrics["nonfinite"]) == 0.0 and int(good.skipped) == 0
    poisoned = state.replace(params=jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan), state.params))
    after, metrics = step(poisoned, batch, jax.random.key(0))
    assert float(metrics["nonfinite"]) == 1.0 and float(metrics["skipped"]) == 1.0
    assert int(after.step) == 1 and int(after.skipped) == 1
    _assert_trees_equal((after.params, after.opt_state), (poisoned.params, poisoned.opt_state))


def test_step_above_the_skip_threshold_changes_nothing_but_the_counters(mnist5k, setup):
    """A gradient norm above skip_threshold: params, Adam's state and the moving average
    stay exactly as they were; step and skipped advance. (Below it the step applies:
    test_state.py's EMA test runs the same step with a large threshold.)"""
    model, optimizer, state, _ = setup
    state = state.replace(ema_params=jax.tree.map(lambda p: p + 1.0, state.params))  # Distinct from params.
    batch = _batches(mnist5k, 1)[0]
    tiny = jax.jit(training.make_train_step(model, optimizer, skip_threshold=1e-6, ema_decay=0.9))
    after, metrics = tiny(state, batch, jax.random.key(0))
    assert float(metrics["grad_norm"]) > 1e-6
    assert float(metrics["skipped"]) == 1.0 and float(metrics["nonfinite"]) == 0.0
    assert int(after.step) == 1 and int(after.skipped) == 1
    _assert_trees_equal((after.params, after.opt_state, after.ema_params),
                        (state.params, state.opt_state, state.ema_params))
    # Twice in a row: the count accumulates.
    after, _ = tiny(after, batch, jax.random.key(1))
    assert int(after.step) == 2 and int(after.skipped) == 2


def test_grad_norm_is_the_global_norm_of_the_gradient(mnist5k, setup):
    """metrics["grad_norm"] is sqrt(sum of squares) over every leaf of d loss / d params."""
    model, optimizer, state, step = setup
    batch = _batches(mnist5k, 1)[0]
    rng = jax.random.key(4)
    _, metrics = step(state, batch, rng)
    keys = inputs.example_keys(rng, 32)
    model_batch = inputs.Preprocessing(SPEC)(batch, keys, train=True)
    grads = jax.jit(jax.grad(lambda p: model.loss(p, model_batch, keys, state.step)[0]))(state.params)
    expected = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(float(metrics["grad_norm"]), expected, rtol=1e-5)
    assert float(training.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])})) == 5.0


def test_microbatches_are_strided_rows():
    rows = jnp.arange(8)[:, None] * jnp.ones((1, 3))
    parts = training.microbatches({"x": rows}, 2)["x"]
    assert parts.shape == (2, 4, 3)
    np.testing.assert_array_equal(parts[:, :, 0], [[0, 2, 4, 6], [1, 3, 5, 7]])


def test_grad_accum_gives_the_update_of_the_whole_batch(mnist5k, setup):
    """Two microbatches of 4 give the same step as one batch of 8 (same per-example keys,
    so the same binarization and posterior noise): params, Adam's moments and metrics
    agree to float rounding, over two steps. Under pmap (4 devices, 2 microbatches of 2
    each) and over a mesh (2 devices) too."""
    model, optimizer, state, jit_step = setup
    accum_step = jax.jit(training.make_train_step(model, optimizer, grad_accum=2))
    batches = _batches(mnist5k, 2, batch_size=8)
    whole, accumulated = state, state
    for i, batch in enumerate(batches):
        whole, m1 = jit_step(whole, batch, jax.random.key(20 + i))
        accumulated, m2 = accum_step(accumulated, batch, jax.random.key(20 + i))
        for name in ("loss", "nelbo", "recon", "kl", "grad_norm"):
            np.testing.assert_allclose(m1[name], m2[name], rtol=1e-5, err_msg=name)
    _assert_trees_close(whole.params, accumulated.params)
    _assert_trees_close(whole.opt_state, accumulated.opt_state)
    assert not np.allclose(jax.tree.leaves(whole.params)[0], jax.tree.leaves(state.params)[0])   # It moved.

    big = _batches(mnist5k, 1, batch_size=16)[0]
    expected, m1 = jit_step(state, big, jax.random.key(7))
    pmap_step = jax.pmap(training.make_train_step(model, optimizer, axis_name=training.PMAP_AXIS, grad_accum=2),
                         axis_name=training.PMAP_AXIS, in_axes=(0, 0, None), devices=jax.devices()[:NUM_DEVICES])
    replicated = jax.tree.map(lambda x: jnp.stack([x] * NUM_DEVICES), state)
    shards = jax.tree.map(lambda x: x.reshape(NUM_DEVICES, -1, *x.shape[1:]), big)
    after, m2 = pmap_step(replicated, shards, jax.random.key(7))
    np.testing.assert_allclose(m1["nelbo"], m2["nelbo"][0], rtol=1e-5)
    _assert_trees_close(expected.params, jax.tree.map(lambda x: x[0], after.params))
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    sharded_step = jax.jit(training.make_train_step(model, optimizer, grad_accum=2),
                           in_shardings=(NamedSharding(mesh, PartitionSpec()),
                                         NamedSharding(mesh, PartitionSpec("data")), None))
    after, m3 = sharded_step(state, big, jax.random.key(7))
    np.testing.assert_allclose(m1["nelbo"], m3["nelbo"], rtol=1e-5)
    _assert_trees_close(expected.params, after.params)


def test_grad_accum_refuses_a_batch_it_cannot_split(mnist5k, setup):
    model, optimizer, state, _ = setup
    step = training.make_train_step(model, optimizer, grad_accum=3)
    with pytest.raises(ValueError, match="batch of 8 does not split into 3 microbatches"):
        jax.eval_shape(step, state, _batches(mnist5k, 1, batch_size=8)[0], jax.random.key(0))
