import os

import jax
import numpy as np
import pytest

from jaxae import checkpoints, training
from jaxae.config import Config, ConfigError
from jaxae.data import InputSpec
from jaxae.models import make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")


def _state(seed):
    config = Config(hidden_dims=(32,), latent_dim=4)
    model = make_model(config, SPEC)
    optimizer = training.make_optimizer(config, 10)
    return training.create_train_state(model, optimizer, jax.random.key(seed))


def test_save_restore_round_trip_and_fallback_past_a_corrupted_checkpoint(tmp_path, caplog):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3)
    old, new = _state(1), _state(2)
    ckpt.save(5, old)
    ckpt.save(9, new)
    ckpt.wait()
    step, restored = ckpt.restore(_state(0))
    assert step == 9
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(new)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Damage every file of the newest checkpoint: the older one is used, with a warning.
    for folder, _, files in os.walk(tmp_path / "checkpoints" / "9"):
        for name in files:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"garbage")
    ckpt.close()
    step, restored = checkpoints.Checkpointer(str(tmp_path)).restore(_state(0))
    assert step == 5
    np.testing.assert_array_equal(jax.tree.leaves(restored.params)[0], jax.tree.leaves(old.params)[0])
    assert "checkpoints/9 is unreadable" in caplog.text


def test_config_round_trip_and_resume_check(tmp_path):
    config = Config(latent_dim=5, hidden_dims=(10, 20))
    config.save(checkpoints.config_path(str(tmp_path)))
    assert checkpoints.load_run_config(str(tmp_path)) == config
    assert checkpoints.check_resumable(str(tmp_path), config.replace(steps=99)) == config
    with pytest.raises(ConfigError, match=r"different config: latent_dim=5 \(asked 6\)"):
        checkpoints.check_resumable(str(tmp_path), config.replace(latent_dim=6))
    assert checkpoints.check_resumable(str(tmp_path / "new"), config) is None


def test_checkpoints_from_before_ema_params_still_restore(tmp_path):
    """A state saved without the (later added) optional ema_params field restores into
    today's TrainState, whose ema_params is None."""
    import jax.numpy as jnp

    from jaxae.checkpoints import Checkpointer
    from jaxae.training import TrainState

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
