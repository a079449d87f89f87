"""The training loop (jaxae.training.loop): fused multi-step calls replay the per-step loop,
chunks stop at every boundary, a resumed run equals an uninterrupted one, and a persistent
non-finite loss stops training with the last good checkpoint intact."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import inputs, training, workdir
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError, TrainingError
from jaxae.families import VAE, make_model
from jaxae.training import loop

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")
CONFIG = Config.create(latent_dim=4, hidden_dims=(16,), learning_rate=3e-3)


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_chunk_lengths_stop_at_every_boundary():
    assert list(loop.chunk_lengths(0, 23, (10, 4), 50)) == [4, 4, 2, 2, 4, 4, 3]
    assert list(loop.chunk_lengths(8, 10, (10,), 50)) == [2]
    assert list(loop.chunk_lengths(0, 12, (100,), 5)) == [5, 5, 2]  # max_len caps a chunk.
    assert list(loop.chunk_lengths(7, 7, (4,), 5)) == []  # Nothing left to train.
    assert list(loop.chunk_lengths(5, 12, (4, 6), 50)) == [1, 2, 4]  # Stops at 6, 8 and 12 (a multiple of both).


def test_nonfinite_streak():
    assert loop.nonfinite_streak(0, np.array([0, 1, 1])) == 2
    assert loop.nonfinite_streak(2, np.array([1, 0])) == 0
    assert loop.nonfinite_streak(3, np.array([1, 1])) == 5
    assert loop.nonfinite_streak(4, np.array([])) == 4


def test_check_model_size_counts_params_and_refuses_absurd_models():
    """784 -> 16 -> (4 mean, 4 logvar); 4 -> 16 -> 784 logits."""
    expected = (784 * 16 + 16) + 2 * (16 * 4 + 4) + (4 * 16 + 16) + (16 * 784 + 784)
    assert loop.check_model_size(make_model(CONFIG, SPEC)) == expected
    huge = make_model(CONFIG.replace(hidden_dims=(1 << 15, 1 << 15)), SPEC)  # > 2^30 params, never allocated.
    with pytest.raises(ConfigError, match=r"^the model has [\d,]+ parameters, more than the 1,073,741,824 allowed"):
        loop.check_model_size(huge)


@pytest.fixture(scope="module")
def step_and_state():
    model = make_model(CONFIG, SPEC)
    optimizer = training.make_optimizer(CONFIG.optimizer, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    return training.make_train_step(model, optimizer), state


@pytest.mark.parametrize("num_steps", [7, 1])  # 7: crosses two epoch boundaries; 1: the loop-free call.
def test_multi_step_equals_single_steps_and_crosses_epochs(step_and_state, num_steps):
    """The fused scan over device-resident data replays exactly the per-step loop: the step's
    epoch permutation, its slice of it, and its key fold_in(step_key, step)."""
    step, state = step_and_state
    images = jax.random.bernoulli(jax.random.key(5), 0.3, (96, 28, 28, 1)).astype(jnp.uint8) * 255
    data_key, step_key = jax.random.key(7), jax.random.key(8)
    batch_size = 32  # 3 steps per epoch.
    run = training.make_multi_step(step, batch_size, 96, num_steps)
    perm = inputs.epoch_permutation(data_key, 0, 96)
    fused, last_perm, metrics = run(jax.tree.map(jnp.copy, state), perm, images, None, data_key, step_key)
    assert int(fused.step) == num_steps
    assert metrics["loss"].shape == (num_steps,)
    jit_step = jax.jit(step)
    manual = state
    for s in range(num_steps):
        epoch, pos = divmod(s, 3)
        idx = inputs.epoch_permutation(data_key, epoch, 96)[pos * batch_size:(pos + 1) * batch_size]
        manual, m = jit_step(manual, {"image": images[idx]}, jax.random.fold_in(step_key, s))
        for name in ("loss", "nelbo", "grad_norm"):
            np.testing.assert_allclose(metrics[name][s], m[name], rtol=1e-5)
    _assert_trees_close(fused.params, manual.params)
    # The permutation returned is the current epoch's.
    np.testing.assert_array_equal(last_perm, inputs.epoch_permutation(data_key, (num_steps - 1) // 3, 96))


def _config(tfds_dir, **changes):
    """A tiny run: 96 training images in batches of 32 (3 steps per epoch), 32 test images."""
    return Config.create(data_dir=tfds_dir, train_split="train[:96]", eval_split="test[:32]", hidden_dims=(16,),
                         latent_dim=4, batch_size=32, steps_per_call=2, eval_every=4, checkpoint_every=4,
                         **changes)


@pytest.fixture(scope="module")
def straight(tfds_dir, tmp_path_factory):
    """10 steps straight: (the last evaluation record, the workdir)."""
    run = str(tmp_path_factory.mktemp("straight"))
    return training.train_and_evaluate(_config(tfds_dir, steps=10), run, progress=False), run


def test_resume_gives_identical_params_and_metrics(tfds_dir, tmp_path, straight):
    """10 steps straight (crossing three epochs) == 4 steps, then resumed to 10 in a new call."""
    straight, straight_dir = straight
    first = training.train_and_evaluate(_config(tfds_dir, steps=4), str(tmp_path / "b"), progress=False)
    assert first["step"] == 4
    resumed = training.train_and_evaluate(_config(tfds_dir, steps=10), str(tmp_path / "b"), progress=False)
    assert straight["step"] == resumed["step"] == 10
    _, params_a, step_a = workdir.load_model(straight_dir)
    _, params_b, step_b = workdir.load_model(str(tmp_path / "b"))
    assert step_a == step_b == 10
    _assert_trees_equal(params_a, params_b)
    nondeterministic = {"train_images_per_sec"}
    assert {k: v for k, v in straight.items() if k not in nondeterministic} == \
           {k: v for k, v in resumed.items() if k not in nondeterministic}
    # metrics.jsonl holds one record per evaluation (4, 8, 10), the same in both.
    records = {}
    for name, folder in (("a", straight_dir), ("b", str(tmp_path / "b"))):
        with open(os.path.join(folder, workdir.METRICS_FILE)) as f:
            records[name] = [json.loads(line) for line in f]
    assert [r["step"] for r in records["a"]] == [r["step"] for r in records["b"]] == [4, 8, 10]
    assert [r["test_nelbo"] for r in records["a"]] == [r["test_nelbo"] for r in records["b"]]
    # Nothing left to train: the restored state is evaluated, nothing else changes.
    again = training.train_and_evaluate(_config(tfds_dir, steps=10), str(tmp_path / "b"), progress=False)
    assert again == {"step": 10, **{k: v for k, v in straight.items() if k.startswith("test_")}}


def test_persistent_nan_stops_training_with_the_last_good_checkpoint_intact(tfds_dir, tmp_path, monkeypatch):
    config = _config(tfds_dir, steps=4, max_nonfinite=3)
    training.train_and_evaluate(config, str(tmp_path), progress=False)
    _, good_params, _ = workdir.load_model(str(tmp_path))

    original = VAE.loss

    def nan_loss(self, params, batch, keys, step):
        loss, metrics = original(self, params, batch, keys, step)
        return loss * jnp.nan, metrics

    monkeypatch.setattr(VAE, "loss", nan_loss)
    # Chunks of 2: the streak is 2 after step 6 and 4 (>= 3) after step 8, before step 8 is checkpointed.
    with pytest.raises(TrainingError, match=r"non-finite for 4 consecutive steps \(up to step 8\).*"
                                            r"last good checkpoint: .*checkpoints/4;"):
        training.train_and_evaluate(config.replace(steps=20), str(tmp_path), progress=False)
    monkeypatch.undo()
    _, params, step = workdir.load_model(str(tmp_path))
    assert step == 4
    _assert_trees_equal(params, good_params)


def test_persistent_skipping_stops_training_with_max_skipped(tfds_dir, tmp_path):
    """Every update over a tiny --skip_threshold is skipped: with --max_skipped 3 training stops
    after the chunk that makes 4 in a row (chunks of 2), before anything is checkpointed."""
    config = _config(tfds_dir, steps=8, skip_threshold=1e-9, max_skipped=3)
    with pytest.raises(TrainingError, match=r"^4 consecutive updates were skipped \(up to step 4; .*"
                                            r"--skip_threshold 1e-09\); stopped \(--max_skipped 3\); "
                                            r"last good checkpoint: none;"):
        training.train_and_evaluate(config, str(tmp_path), progress=False)


def test_a_checkpoint_that_cannot_be_written_is_one_write_error_and_the_run_resumes_exactly(
        tfds_dir, tmp_path, monkeypatch, straight):
    """With too little free space for step 8's checkpoint, training stops with one WriteError
    naming the folder, the sizes and the last good checkpoint (step 4, intact); once space
    is back, the same call resumes from step 4 and ends as an uninterrupted run does."""
    from jaxae import checkpoints
    from jaxae.errors import WriteError

    straight, straight_dir = straight
    run = str(tmp_path / "b")
    training.train_and_evaluate(_config(tfds_dir, steps=4), run, progress=False)
    real = checkpoints.shutil.disk_usage
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    folder = checkpoints.checkpoint_dir(run)
    with pytest.raises(WriteError) as error:
        training.train_and_evaluate(_config(tfds_dir, steps=10), run, progress=False)
    message = str(error.value)
    assert message.startswith(f"cannot write a checkpoint of step 8 in '{folder}': it needs about ")
    assert message.endswith(f"MiB and 0.0 MiB are free; last good checkpoint: {folder}/4; rerun the same command "
                            "to resume once it can be written") and "\n" not in message
    assert sorted(os.listdir(folder)) == ["4"] and not os.path.exists(os.path.join(run, workdir.LOCK_FILE))
    monkeypatch.undo()
    resumed = training.train_and_evaluate(_config(tfds_dir, steps=10), run, progress=False)
    nondeterministic = {"train_images_per_sec"}
    assert {k: v for k, v in straight.items() if k not in nondeterministic} == \
           {k: v for k, v in resumed.items() if k not in nondeterministic}
    _assert_trees_equal(workdir.load_model(straight_dir)[1], workdir.load_model(run)[1])
    with open(os.path.join(run, workdir.METRICS_FILE)) as f:
        assert [json.loads(line)["step"] for line in f] == [4, 8, 10]  # Step 8's first record was dropped.


def test_unreadable_checkpoints_are_refused_not_trained_over(tfds_dir, tmp_path):
    """Starting from scratch would let --keep_checkpoints delete them: refuse, touch nothing."""
    run = str(tmp_path)
    training.train_and_evaluate(_config(tfds_dir, steps=4), run, progress=False)
    folder = os.path.join(run, "checkpoints", "4")
    for parent, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(parent, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(ConfigError, match=r"no checkpoint in '.*checkpoints' is readable \(steps \[4\]\); move them "
                                          r"away, or pass --reset to start over$"):
        training.train_and_evaluate(_config(tfds_dir, steps=8), run, progress=False)
    assert os.listdir(os.path.join(run, "checkpoints")) == ["4"]
