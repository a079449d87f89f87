"""Streaming input (jaxae.streaming): the memory-mapped copy of a split, each process's rows,
the feeder's chunks, and training that streams equal to training that holds the split."""

import json
import os

import jax
import numpy as np
import pytest

from jaxae import data, inputs, streaming, training, workdir
from jaxae.config import Config
from jaxae.errors import ConfigError


@pytest.fixture(scope="module")
def digits(mnist5k, tmp_path_factory):
    """An .npz source of 1,500 training digits (1.1 MiB as uint8, over a 1 MiB residency
    limit) and 100 test digits: (path, train split)."""
    _, train, test = mnist5k
    train = data.Split(train.images[:1500], train.labels[:1500])
    path = str(tmp_path_factory.mktemp("npz") / "digits.npz")
    data.save_npz(path, {"train": train, "test": data.Split(test.images[:100], test.labels[:100])}, num_classes=10)
    return path, train


def test_local_rows_give_each_process_its_contiguous_part_of_the_batch():
    perm = np.arange(12)[::-1]                      # Epoch order 11, 10, ..., 0; batches of 4.
    assert streaming.local_rows(perm, 1, 4, 0, 1).tolist() == [7, 6, 5, 4]
    assert streaming.local_rows(perm, 1, 4, 0, 2).tolist() == [7, 6]
    assert streaming.local_rows(perm, 1, 4, 1, 2).tolist() == [5, 4]
    assert streaming.local_rows(perm, 2, 4, 3, 4).tolist() == [0]


def test_the_copy_is_written_once_equals_the_split_and_a_damaged_one_is_refused(digits, tmp_path, monkeypatch):
    path, train = digits
    source = data.ArraySource.open(path)
    split = streaming.open_split(source, "train", cache_dir=str(tmp_path))
    assert isinstance(split.images, np.memmap) and split.path.startswith(str(tmp_path))
    np.testing.assert_array_equal(split.images, train.images)
    np.testing.assert_array_equal(split.labels, train.labels)
    monkeypatch.setattr(streaming, "_write", lambda *args: pytest.fail("written twice"))
    again = streaming.open_split(source, "train", cache_dir=str(tmp_path))
    assert again.path == split.path
    monkeypatch.undo()
    small = streaming.open_split(source, "train[:10]", image_size=14, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(small.images, data.load_split(source, "train[:10]", image_size=14).images)
    assert small.path != split.path and small.images.shape == (10, 14, 14, 1)
    with open(os.path.join(split.path, streaming.DONE_FILE), "w") as f:
        json.dump({"count": 7, "labels": True}, f)
    with pytest.raises(ConfigError, match=r"^the streaming copy '.*' is damaged \(ValueError: .*\); delete it"):
        streaming.open_split(source, "train", cache_dir=str(tmp_path))


def test_feeder_chunks_hold_the_resident_paths_rows_across_an_epoch(digits, tmp_path):
    """Steps 9..13 with batches of 128 of 1,500 images (11 per epoch): the batches are rows
    of epoch 0's permutation, then epoch 1's, exactly what the resident path gathers."""
    path, train = digits
    split = streaming.open_split(data.ArraySource.open(path), "train", cache_dir=str(tmp_path))
    key = jax.random.key(3)
    with streaming.Feeder(split, key, 128, start=9, chunks=[2, 3]) as feeder:
        first, second = feeder.next(), feeder.next()
    expected = []
    for step in range(9, 14):
        epoch, position = divmod(step, 11)
        perm = np.asarray(inputs.epoch_permutation(key, epoch, 1500))
        expected.append(perm[position * 128:(position + 1) * 128])
    images = np.concatenate([np.asarray(first["image"]), np.asarray(second["image"])])
    labels = np.concatenate([np.asarray(first["label"]), np.asarray(second["label"])])
    assert images.shape == (5, 128, 28, 28, 1) and labels.shape == (5, 128)
    np.testing.assert_array_equal(images, train.images[np.stack(expected)])
    np.testing.assert_array_equal(labels, train.labels[np.stack(expected)])


def _config(path, tmp_path, **changes):
    settings = dict(dataset=path, data_dir=str(tmp_path / "cache"), hidden_dims=(16,), latent_dim=4, batch_size=128,
                    steps_per_call=3, eval_every=6, checkpoint_every=6, resident_limit_mib=1)
    return Config.create(**{**settings, **changes})


def test_a_split_over_the_limit_streams_and_trains_as_the_resident_path_and_resumes_mid_epoch(digits, tmp_path):
    """--input auto streams the 1.1 MiB split (limit 1 MiB); 16 steps of 11 per epoch equal
    16 resident steps (to float32 rounding: the two are different compiled programs, whose
    sums XLA may order differently), and a streamed run stopped at step 6 (mid-epoch 0) and
    resumed equals the uninterrupted streamed run exactly."""
    path, _ = digits
    resident = training.train_and_evaluate(_config(path, tmp_path, steps=16, input="resident",
                                                   resident_limit_mib=2), str(tmp_path / "r"), progress=False)
    config = _config(path, tmp_path, steps=16)
    streamed = training.train_and_evaluate(config, str(tmp_path / "s"), progress=False)
    assert training.loop.streams(config.data, data.ArraySource.open(path))
    training.train_and_evaluate(_config(path, tmp_path, steps=6), str(tmp_path / "k"), progress=False)
    resumed = training.train_and_evaluate(config, str(tmp_path / "k"), progress=False)
    measured = {"train_images_per_sec"}
    streamed, resumed, resident = ({k: v for k, v in run.items() if k not in measured}
                                   for run in (streamed, resumed, resident))
    assert resumed == streamed
    assert streamed == pytest.approx(resident, rel=1e-6, abs=1e-6) and streamed["step"] == resident["step"] == 16
    resident_params, streamed_params, resumed_params = (
        jax.tree.leaves(workdir.load_model(str(tmp_path / name))[1]) for name in ("r", "s", "k"))
    for x, y, z in zip(resident_params, streamed_params, resumed_params):
        np.testing.assert_array_equal(np.asarray(z), np.asarray(y))
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


def test_resident_input_over_the_limit_is_a_one_line_error(digits, tmp_path):
    path, _ = digits
    with pytest.raises(ConfigError, match=r"^split 'train' of 'digits.npz' needs 0.00 GiB as uint8 \(28, 28, 1\) "
                                          r"images; a split held whole is limited to 0.00 GiB .*--input streaming"):
        training.train_and_evaluate(_config(path, tmp_path, steps=2, input="resident"), str(tmp_path / "r"),
                                    progress=False)
