"""TensorBoard event files written in the caller's thread (jaxae.tensorboard)."""

import os

import numpy as np
import pytest

from jaxae import tensorboard
from jaxae.errors import WriteError


def _events(logdir):
    import tensorflow as tf

    (name,) = os.listdir(logdir)
    assert name.startswith("events.out.tfevents.")
    return list(tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)))


def test_scalars_and_images_read_back_with_tensorflow(tmp_path):
    import tensorflow as tf

    writer = tensorboard.writer(str(tmp_path / "tb"), primary=True)
    writer.add_scalar("train/loss", 1.5, 3)
    writer.add_scalar("train/loss", 0.25, 7)
    image = (np.arange(2 * 3 * 3) * 9).astype(np.uint8).reshape(2, 3, 3)
    writer.add_image("samples", image, 7)
    writer.flush()
    writer.close()
    events = [e for e in _events(tmp_path / "tb") if e.HasField("summary")]
    scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value if v.HasField("simple_value")]
    assert scalars == [(3, "train/loss", 1.5), (7, "train/loss", 0.25)]
    (png,) = [v.image for e in events for v in e.summary.value if v.HasField("image")]
    assert (png.height, png.width, png.colorspace) == (2, 3, 3)
    np.testing.assert_array_equal(tf.io.decode_png(png.encoded_image_string).numpy(), image)


def test_a_full_disk_is_one_write_error_in_the_callers_thread(tmp_path, monkeypatch):
    """tensorboardX's own writer would lose the error in a background thread and then hang on
    flush; here the flush raises. The event file is made a link to /dev/full (ENOSPC)."""
    import tensorboardX.event_file_writer as efw

    logdir = tmp_path / "tb"
    logdir.mkdir()
    monkeypatch.setattr(efw.time, "time", lambda: 1234567890.5)  # Fixes the file's name.
    monkeypatch.setattr(efw.socket, "gethostname", lambda: "host")
    os.symlink("/dev/full", logdir / "events.out.tfevents.1234567890.host")
    writer = tensorboard.EventWriter(str(logdir))
    writer.add_scalar("x", 1.0, 1)
    with pytest.raises(WriteError) as error:
        writer.flush()
    assert str(error.value) == f"cannot write '{logdir}': No space left on device (ENOSPC)"


def test_other_processes_write_nothing(tmp_path):
    writer = tensorboard.writer(str(tmp_path / "tb"), primary=False)
    writer.add_scalar("x", 1.0, 1)
    writer.add_image("y", np.zeros((2, 2, 1), np.uint8), 1)
    writer.flush()
    writer.close()
    assert not (tmp_path / "tb").exists()
