"""Orbax checkpoints of the train state (jaxae.checkpoints.Checkpointer)."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import checkpoints, training
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.families import make_model
from jaxae.training import TrainState

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")
CONFIG = Config.create(hidden_dims=(8,), latent_dim=2)


def _state(seed, ema=False):
    model = make_model(CONFIG, SPEC)
    optimizer = training.make_optimizer(CONFIG.optimizer, 10)
    return training.create_train_state(model, optimizer, jax.random.key(seed), ema=ema)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_round_trip_and_fallback_past_a_corrupted_checkpoint(tmp_path, caplog):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3)
    old, new = _state(1), _state(2)
    ckpt.save(5, old)
    ckpt.save(9, new)
    ckpt.wait()
    assert ckpt.steps() == [5, 9] and ckpt.latest_step() == 9
    step, restored = ckpt.restore(_state(0))
    assert step == 9 and isinstance(restored, TrainState)
    _assert_trees_equal(restored, new)
    # Damage every file of the newest checkpoint: the older one is used, with a warning.
    for folder, _, files in os.walk(tmp_path / "checkpoints" / "9"):
        for name in files:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"garbage")
    ckpt.close()
    step, restored = checkpoints.Checkpointer(str(tmp_path)).restore(_state(0))
    assert step == 5
    _assert_trees_equal(restored, old)
    assert f"{tmp_path}/checkpoints/9 is unreadable" in caplog.text


def test_checkpoints_from_before_ema_params_still_restore(tmp_path):
    """A state saved without the (later added) optional ema_params field restores into
    today's TrainState, whose ema_params is None."""
    from jaxae.checkpoints import Checkpointer

    params = {"w": jnp.arange(3.0)}
    legacy = {"step": jnp.asarray(7), "params": params, "opt_state": {"m": jnp.ones(3)}, "skipped": jnp.asarray(0)}
    saver = Checkpointer(str(tmp_path))
    saver.save(7, legacy)
    saver.wait()
    saver.close()
    target = TrainState(step=jnp.asarray(0), params={"w": jnp.zeros(3)}, opt_state={"m": jnp.zeros(3)},
                        skipped=jnp.asarray(0))
    step, state = Checkpointer(str(tmp_path)).restore(target)
    assert step == 7 and int(state.step) == 7 and state.ema_params is None
    assert list(state.params["w"]) == [0.0, 1.0, 2.0]


def test_ema_params_round_trip_and_keep_prunes_old_steps(tmp_path):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=2)
    state = _state(1, ema=True)
    state = state.replace(ema_params=jax.tree.map(lambda p: p + 1.0, state.params))
    for step in (1, 2, 3):
        ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
    ckpt.wait()
    assert ckpt.steps() == [2, 3]
    step, restored = ckpt.restore(_state(0, ema=True))
    ckpt.close()
    assert step == 3 and int(restored.step) == 3
    _assert_trees_equal(restored.ema_params, state.ema_params)
    _assert_trees_equal(restored.params, state.params)


def test_no_checkpoint_restores_to_none(tmp_path):
    ckpt = checkpoints.Checkpointer(str(tmp_path))
    assert ckpt.steps() == [] and ckpt.latest_step() is None
    assert ckpt.restore(_state(0)) is None
    ckpt.close()
    assert checkpoints.checkpoint_dir(str(tmp_path)) == os.path.join(str(tmp_path), "checkpoints")
