"""A train.py work directory (jaxae.workdir): its config and input spec, resuming checks,
reset, and rebuilding the trained model from it."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import checkpoints, training, workdir
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import VAE, make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")
CONFIG = Config.create(hidden_dims=(8,), latent_dim=2, steps=20)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_config_round_trip_and_resume_check(tmp_path):
    config = Config.create(latent_dim=5, hidden_dims=(10, 20))
    assert workdir.check_resumable(str(tmp_path), config) is None  # Nothing saved yet.
    config.save(workdir.config_path(str(tmp_path)))
    assert workdir.config_path(str(tmp_path)) == os.path.join(str(tmp_path), "config.json")
    assert workdir.load_config(str(tmp_path)) == config
    # The settings that may change on resume (run length, cadence, devices) do.
    for resumable in ({"steps": 99}, {"eval_every": 7, "checkpoint_every": 7}, {"steps_per_call": 3},
                      {"data_dir": "/elsewhere"}, {"parallel": "pmap"}, {"max_nonfinite": 2}):
        assert workdir.check_resumable(str(tmp_path), config.replace(**resumable)) == config, resumable
    with pytest.raises(ConfigError, match=r"different config: latent_dim=5 \(asked 6\); use another --workdir, "
                                          r"or --reset"):
        workdir.check_resumable(str(tmp_path), config.replace(latent_dim=6))
    with pytest.raises(ConfigError, match=r"different config: model='vae' \(asked 'iwae'\), "
                                          r"learning_rate=0.001 \(asked 0.01\)"):
        workdir.check_resumable(str(tmp_path), config.replace(model="iwae", learning_rate=0.01))
    assert workdir.check_resumable(str(tmp_path / "new"), config) is None


def test_old_flat_config_json_loads(tmp_path):
    """config.json as 0.1 wrote it (flat, lists for tuples) is the same config."""
    flat = json.loads(Config.create(latent_dim=3, hidden_dims=(7,)).to_json())
    flat = {k: v for section in flat.values() for k, v in section.items()}
    flat["model"] = flat.pop("family")
    (tmp_path / "config.json").write_text(json.dumps(flat))
    assert workdir.load_config(str(tmp_path)) == Config.create(latent_dim=3, hidden_dims=(7,))


def test_missing_or_broken_config_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"holds no config.json; train a model there with train.py first"):
        workdir.load_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"^config '.*config.json' is not readable JSON: Expecting"):
        workdir.load_config(str(tmp_path))
    (tmp_path / "config.json").write_text('{"latent_dim": 4, "colour": "red"}')
    with pytest.raises(ConfigError, match=r"^config .*: unknown config field\(s\) \['colour'\]") as error:
        workdir.check_resumable(str(tmp_path), Config())
    assert "\n" not in str(error.value)


def test_input_spec_round_trip_and_errors(tmp_path):
    spec = InputSpec(image_shape=(32, 32, 3), num_classes=0, mode="dequantize", num_train=50000)
    workdir.save_input_spec(str(tmp_path), spec)
    assert json.loads((tmp_path / workdir.INPUT_SPEC_FILE).read_text()) == \
        {"image_shape": [32, 32, 3], "num_classes": 0, "mode": "dequantize", "num_train": 50000}
    assert workdir.load_input_spec(str(tmp_path)) == spec and workdir.load_input_spec(str(tmp_path)).num_train == 50000
    (tmp_path / workdir.INPUT_SPEC_FILE).write_text('{"image_shape": [32, 32, 3], "num_classes": 0, "mode": "grey"}')
    assert workdir.load_input_spec(str(tmp_path)).num_train == 0  # Written before num_train was recorded.
    assert sorted(os.listdir(tmp_path)) == ["input_spec.json"]  # No temporary file left.
    (tmp_path / workdir.INPUT_SPEC_FILE).write_text('{"image_shape": [28, 28, 1]}')
    with pytest.raises(ConfigError, match=r"^cannot read .*input_spec.json' \(KeyError: 'num_classes'\); "
                                          r"is .* a train.py workdir\?"):
        workdir.load_input_spec(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^cannot read .*input_spec.json' \(FileNotFoundError"):
        workdir.load_input_spec(str(tmp_path / "none"))
    for crafted, message in [
            ({"image_shape": [28, -5, 1], "num_classes": 10, "mode": "dynamic"},
             r"image shape \(28, -5, 1\) must be \(height, width, channels\) with each in 1..32768"),
            ({"image_shape": [28, 28], "num_classes": 10, "mode": "dynamic"}, r"image shape \(28, 28\) must be"),
            ({"image_shape": [28, 28, 1], "num_classes": -1, "mode": "dynamic"}, r"num_classes -1 must be in 0.."),
            ({"image_shape": [28, 28, 1], "num_classes": 10, "mode": "weird"},
             r"input mode 'weird' must be one of binary, dynamic, grey, dequantize")]:
        (tmp_path / workdir.INPUT_SPEC_FILE).write_text(json.dumps(crafted))
        with pytest.raises(ConfigError, match=r"^'.*input_spec.json' is not a valid input spec: " + message):
            workdir.load_input_spec(str(tmp_path))


def test_reset_removes_the_run_but_keeps_other_files(tmp_path):
    CONFIG.save(workdir.config_path(str(tmp_path)))
    (tmp_path / workdir.METRICS_FILE).write_text('{"step": 1}\n')
    (tmp_path / checkpoints.CHECKPOINT_DIR / "5").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    workdir.save_input_spec(str(tmp_path), SPEC)
    workdir.reset(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["input_spec.json", "notes.txt"]
    workdir.reset(str(tmp_path))  # Nothing to remove: no error.
    workdir.reset(str(tmp_path / "missing"))


def test_check_writable(tmp_path):
    workdir.check_writable(str(tmp_path / "a" / "b"))  # Created later, under a writable folder.
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot be created or written \(.*file' is not a writable directory\)"):
        workdir.check_writable(str(tmp_path / "file" / "run"))


def _write_run(path, config, state, steps=(3,)):
    config.save(workdir.config_path(str(path)))
    workdir.save_input_spec(str(path), SPEC)
    ckpt = checkpoints.Checkpointer(str(path))
    for step in steps:
        ckpt.save(step, state)
    ckpt.wait()
    ckpt.close()


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_load_model_rebuilds_the_model_and_restores_its_newest_params(tmp_path, ema_decay):
    """The params of the newest checkpoint, or their moving average when the run kept one."""
    config = CONFIG.replace(ema_decay=ema_decay)
    model = make_model(config, SPEC)
    state = training.create_train_state(model, training.make_optimizer(config.optimizer, 20), jax.random.key(4),
                                        ema=ema_decay > 0)
    params = jax.tree.map(lambda p: p + 1.0, state.params)
    ema = jax.tree.map(lambda p: p - 1.0, state.params) if ema_decay else None
    _write_run(tmp_path, config, state.replace(params=params, ema_params=ema), steps=(3, 7))
    loaded, restored, step = workdir.load_model(str(tmp_path))
    assert step == 7
    assert isinstance(loaded, VAE) and loaded == model and loaded.spec == SPEC and loaded.latent_dim == 2
    _assert_trees_equal(restored, ema if ema_decay else params)


def test_load_model_without_a_usable_run_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no config.json"):
        workdir.load_model(str(tmp_path))
    CONFIG.save(workdir.config_path(str(tmp_path)))
    with pytest.raises(ConfigError, match=r"cannot read .*input_spec.json' \(FileNotFoundError"):
        workdir.load_model(str(tmp_path))
    workdir.save_input_spec(str(tmp_path), SPEC)
    with pytest.raises(ConfigError, match=r"holds no checkpoint; train a model there with train.py first"):
        workdir.load_model(str(tmp_path))
    (tmp_path / checkpoints.CHECKPOINT_DIR).mkdir()
    with pytest.raises(ConfigError, match=r"holds no readable checkpoint in .*checkpoints'"):
        workdir.load_model(str(tmp_path))
    # A model the saved config cannot build on the saved spec: the conditional model needs labels.
    Config.create(model="cvae", hidden_dims=(8,), latent_dim=2).save(workdir.config_path(str(tmp_path)))
    workdir.save_input_spec(str(tmp_path), InputSpec((28, 28, 1), 0, "dynamic"))
    with pytest.raises(ConfigError, match=r"^cannot build the model saved in .*: --model cvae is conditional and "
                                          r"needs a labelled dataset"):
        workdir.load_model(str(tmp_path))


def test_load_model_params_give_the_same_numbers_as_the_saved_state(tmp_path):
    """The rebuilt model with the restored params decodes exactly as the original did."""
    model = make_model(CONFIG, SPEC)
    state = training.create_train_state(model, training.make_optimizer(CONFIG.optimizer, 20), jax.random.key(9))
    _write_run(tmp_path, CONFIG, state)
    loaded, params, _ = workdir.load_model(str(tmp_path))
    z = jnp.linspace(-1, 1, 6).reshape(3, 2)
    np.testing.assert_array_equal(loaded.decode(params, z), model.decode(state.params, z))


def test_lock_refuses_a_second_run_and_is_released(tmp_path):
    path = tmp_path / workdir.LOCK_FILE
    with workdir.lock(str(tmp_path)):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(ConfigError, match=rf"^--workdir '{tmp_path}' is in use by pid {os.getpid()} on "
                                              rf"{socket.gethostname()} since ") as error:
            with workdir.lock(str(tmp_path)):
                pass
        assert "\n" not in str(error.value)
        assert path.exists()  # The refused attempt leaves the holder's lock alone.
    assert not path.exists()
    with pytest.raises(RuntimeError):  # Released when the run fails too.
        with workdir.lock(str(tmp_path)):
            raise RuntimeError("training failed")
    assert not path.exists()


def test_stale_locks_are_taken_over_and_foreign_ones_refused(tmp_path):
    path = tmp_path / workdir.LOCK_FILE
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # A pid that no longer runs.
    for stale in ({"pid": gone.pid, "host": socket.gethostname()}, "{half written"):
        path.write_text(stale if isinstance(stale, str) else json.dumps(stale))
        with workdir.lock(str(tmp_path)):
            assert json.loads(path.read_text())["pid"] == os.getpid()
        assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "another-host", "started": "yesterday"}))
    with pytest.raises(ConfigError, match=r"in use by pid 1 on another-host since yesterday; if that run is gone, "
                                          r"delete .*lock.json"):
        with workdir.lock(str(tmp_path)):
            pass
    assert json.loads(path.read_text())["host"] == "another-host"


def test_train_and_evaluate_refuses_a_locked_workdir_before_writing(tfds_dir, tmp_path):
    from jaxae.config import Config
    from jaxae.training import train_and_evaluate

    config = Config.create(data_dir=tfds_dir, hidden_dims=(8,), latent_dim=2, steps=2, eval_every=2,
                           checkpoint_every=2, batch_size=16)
    with workdir.lock(str(tmp_path)):
        with pytest.raises(ConfigError, match="is in use by pid"):
            train_and_evaluate(config, str(tmp_path), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
