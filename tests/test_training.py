"""The one train step under jit, pmap and jit-over-a-mesh; the loop's determinism and resume."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxae import training
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.models import make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")
CONFIG = Config(latent_dim=8, hidden_dims=(64,), learning_rate=3e-3)
NUM_DEVICES = 4


def _setup(config=CONFIG):
    model = make_model(config, SPEC)
    optimizer = training.make_optimizer(config, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    return model, optimizer, state


def _batches(mnist5k, num, batch_size=32):
    images = mnist5k[1].images
    return [{"image": jnp.asarray(images[i * batch_size:(i + 1) * batch_size])} for i in range(num)]


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_pmap_step_matches_jit_step_on_the_same_global_batch(mnist5k):
    assert jax.device_count() >= NUM_DEVICES, "conftest sets 4 fake CPU devices"
    model, optimizer, state = _setup()
    jit_step = jax.jit(training.make_train_step(model, optimizer))
    pmap_step = jax.pmap(training.make_train_step(model, optimizer, axis_name="batch"),
                         axis_name="batch", in_axes=(0, 0, None), devices=jax.devices()[:NUM_DEVICES])
    replicated = jax.tree.map(lambda x: jnp.stack([x] * NUM_DEVICES), state)
    single = state
    for i, batch in enumerate(_batches(mnist5k, 3)):
        rng = jax.random.key(10 + i)
        single, m1 = jit_step(single, batch, rng)
        shards = jax.tree.map(lambda x: x.reshape(NUM_DEVICES, -1, *x.shape[1:]), batch)
        replicated, m2 = pmap_step(replicated, shards, rng)
        for name in ("nelbo", "recon", "kl", "grad_norm"):
            np.testing.assert_allclose(m1[name], m2[name][0], rtol=1e-5)
    _assert_trees_close(single.params, jax.tree.map(lambda x: x[0], replicated.params))
    assert int(replicated.step[0]) == int(single.step) == 3


@pytest.mark.parametrize("num_devices", [2, 4])
def test_sharded_jit_matches_single_device(mnist5k, num_devices):
    model, optimizer, state = _setup()
    step = training.make_train_step(model, optimizer)
    mesh = jax.make_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices])
    sharded_step = jax.jit(step, in_shardings=(NamedSharding(mesh, PartitionSpec()),
                                               NamedSharding(mesh, PartitionSpec("data")), None))
    single, sharded = state, state
    for i, batch in enumerate(_batches(mnist5k, 2)):
        single, m1 = jax.jit(step)(single, batch, jax.random.key(i))
        sharded, m2 = sharded_step(sharded, batch, jax.random.key(i))
        np.testing.assert_allclose(m1["nelbo"], m2["nelbo"], rtol=1e-5)
    _assert_trees_close(single.params, sharded.params)


def test_loss_decreases_on_real_digits(mnist5k):
    model, optimizer, state = _setup()
    step = jax.jit(training.make_train_step(model, optimizer))
    losses = []
    for i, batch in enumerate(_batches(mnist5k, 60, batch_size=64)):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["nelbo"]))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("num_steps", [7, 1])  # 7: crosses two epoch boundaries; 1: the loop-free call.
def test_multi_step_equals_single_steps_and_crosses_epochs(num_steps):
    """The fused scan over device-resident data replays exactly the per-step loop."""
    model, optimizer, state = _setup()
    images = jax.random.bernoulli(jax.random.key(5), 0.3, (96, 28, 28, 1)).astype(jnp.uint8) * 255
    data_key, step_key = jax.random.key(7), jax.random.key(8)
    step = training.make_train_step(model, optimizer)
    batch_size = 32  # 3 steps per epoch.
    from jaxae.data import epoch_permutation

    run = training.make_multi_step(step, batch_size, 96, num_steps)
    perm = epoch_permutation(data_key, 0, 96)
    fused, _, metrics = run(jax.tree.map(jnp.copy, state), perm, images, None, data_key, step_key)
    manual = state
    for s in range(num_steps):
        epoch, pos = divmod(s, 3)
        idx = epoch_permutation(data_key, epoch, 96)[pos * batch_size:(pos + 1) * batch_size]
        manual, m = jax.jit(step)(manual, {"image": images[idx]}, jax.random.fold_in(step_key, s))
        np.testing.assert_allclose(metrics["nelbo"][s], m["nelbo"], rtol=1e-5)
    _assert_trees_close(fused.params, manual.params)


def test_chunk_lengths_stop_at_every_boundary():
    chunks = list(training._chunk_lengths(0, 23, (10, 4), 50))
    assert chunks == [4, 4, 2, 2, 4, 4, 3]
    assert list(training._chunk_lengths(8, 10, (10,), 50)) == [2]



@pytest.mark.slow
def test_resume_gives_identical_params_and_runs_are_deterministic(tfds_dir, tmp_path):
    from jaxae.checkpoints import load_model

    def run(workdir, steps):
        config = Config(data_dir=tfds_dir, steps=steps, eval_every=10, checkpoint_every=10, hidden_dims=(64,),
                        latent_dim=8, steps_per_call=5, batch_size=64)
        return training.train_and_evaluate(config, str(workdir), progress=False)

    straight = run(tmp_path / "a", 150)        # 70 steps per epoch: crosses two epochs.
    run(tmp_path / "b", 80)
    resumed = run(tmp_path / "b", 150)          # Continues from step 80.
    again = run(tmp_path / "c", 150)
    _, params_a, step_a = load_model(str(tmp_path / "a"))
    _, params_b, step_b = load_model(str(tmp_path / "b"))
    _, params_c, _ = load_model(str(tmp_path / "c"))
    assert step_a == step_b == 150
    for a, b, c in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), jax.tree.leaves(params_c)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    assert straight["test_nelbo"] == resumed["test_nelbo"] == again["test_nelbo"]


def test_nonfinite_gradient_skips_the_update_and_is_counted(mnist5k):
    model, optimizer, state = _setup()
    step = jax.jit(training.make_train_step(model, optimizer))
    batch = _batches(mnist5k, 1)[0]
    good, metrics = step(state, batch, jax.random.key(0))
    assert float(metrics["nonfinite"]) == 0.0 and int(good.skipped) == 0
    poisoned = state.replace(params=jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan), state.params))
    after, metrics = step(poisoned, batch, jax.random.key(0))
    assert float(metrics["nonfinite"]) == 1.0
    assert int(after.step) == 1 and int(after.skipped) == 1
    for a, b in zip(jax.tree.leaves((after.params, after.opt_state)),
                    jax.tree.leaves((poisoned.params, poisoned.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nonfinite_streak():
    assert training._nonfinite_streak(0, np.array([0, 1, 1])) == 2
    assert training._nonfinite_streak(2, np.array([1, 0])) == 0
    assert training._nonfinite_streak(3, np.array([1, 1])) == 5


@pytest.mark.slow
def test_persistent_nan_stops_training_with_the_last_good_checkpoint_intact(tfds_dir, tmp_path, monkeypatch):
    from jaxae.checkpoints import load_model
    from jaxae.cli import TrainingError
    from jaxae.models import AutoencoderModel

    config = Config(data_dir=tfds_dir, steps=40, eval_every=20, checkpoint_every=20, hidden_dims=(32,),
                    latent_dim=4, steps_per_call=10, batch_size=64, max_nonfinite=15)
    training.train_and_evaluate(config, str(tmp_path), progress=False)
    _, good_params, _ = load_model(str(tmp_path))

    original = AutoencoderModel.loss

    def nan_loss(self, params, batch, keys, step):
        loss, metrics = original(self, params, batch, keys, step)
        return loss * jnp.nan, metrics

    monkeypatch.setattr(AutoencoderModel, "loss", nan_loss)
    with pytest.raises(TrainingError, match=r"non-finite for 20 consecutive steps .*checkpoints/40"):
        training.train_and_evaluate(config.replace(steps=200), str(tmp_path), progress=False)
    monkeypatch.undo()
    _, params, step = load_model(str(tmp_path))
    assert step == 40
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(good_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
