"""Test setup: 4 fake CPU devices (for pmap/sharding tests) and a session TFDS data dir."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A TFDS data dir with the embedded mnist_5k prepared once per session."""
    from jaxae import data
    from jaxae.config import DataConfig

    path = str(tmp_path_factory.mktemp("tfds"))
    data.prepared_builder(DataConfig(data_dir=path))
    return path


@pytest.fixture(scope="session")
def mnist5k(tfds_dir):
    """(builder, train split, test split) of mnist_5k."""
    from jaxae import data
    from jaxae.config import DataConfig

    builder = data.prepared_builder(DataConfig(data_dir=tfds_dir))
    return builder, data.load_split(builder, "train"), data.load_split(builder, "test")
