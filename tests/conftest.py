"""Test setup: 4 fake CPU devices (for pmap/sharding tests) and a session TFDS data dir."""

import os

# XLA:CPU's LLVM-IR fusion emitters instead of its newer MLIR ones: they compile the small
# programs of the tests about twice as fast (a tiny MLP VAE's 20-step train call 0.94 s ->
# 0.45 s, a conv VAE's 1.85 s -> 0.66 s) and the tests' programs run for milliseconds.
FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS of a test process (this one, or a CLI process a test starts) with ``devices`` CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE_FLAGS}"


# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", xla_flags(4))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Compile without XLA's backend (LLVM) optimizations, here and in the CLI processes the tests
# start: most tests compile small programs and run them for milliseconds, so optimizing the
# code costs more than it saves (on CPU, about a second per random-number call site). That
# holds even for the longest tests (40 steps of a 3-stage hvae: 37 s optimized, 26 s not).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


def _session_compilation_cache() -> None:
    """One persistent XLA compilation cache for the whole session: the controller makes it
    before it starts the xdist workers, which inherit it, as do the train.py/sample.py
    processes the tests start. Many tests compile the same small programs (the same network
    and shapes in another test, process or CLI); they load them instead. The size limit
    makes JAX guard each entry with a file lock, so that concurrent processes never read
    an entry another is still writing. A test that must compile afresh passes its own
    environment."""
    import importlib.util

    if "JAX_COMPILATION_CACHE_DIR" in os.environ or importlib.util.find_spec("filelock") is None:
        return
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="jaxae-tests-xla-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
                      JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))


_session_compilation_cache()

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The test files that take longest (``pytest --durations``, summed per file), longest first.
# xdist hands whole files to its workers in collection order (``--dist loadfile
# --no-loadscope-reorder``, pyproject.toml), so starting these first keeps both workers busy to
# the end instead of one finishing a long file alone (longest-processing-time-first). Only
# the order depends on this list: a stale or missing name changes no result.
LONGEST_FIRST = ("test_cli.py", "test_families_e2e.py", "test_folders.py", "nets/test_hierarchical.py",
                 "test_pretrained.py", "test_distributed.py", "families/test_hvae.py", "families/test_iaf.py",
                 "families/test_vqvae.py", "families/test_two_stage.py", "families/test_draw.py",
                 "families/test_registry.py", "training/test_loop.py", "nets/test_bfloat16.py", "test_data.py",
                 "test_conditioning.py", "training/test_step.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests = os.path.join(REPO, "tests")
    items.sort(key=lambda item: rank.get(os.path.relpath(str(item.path), tests), len(rank)))


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


def random_like(shapes, seed: int, scale: float):
    """float32 arrays with the structure and shapes of ``shapes`` (a pytree of ShapeDtypeStructs,
    e.g. from jax.eval_shape of an init) drawn from a seeded normal: leaves named ``kernel``
    with std scale / sqrt(fan_in), every other leaf with std scale. Used as parameters away
    from the initialisation, where every term of a formula matters."""
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(seed)
    leaves = []
    for path, leaf in flat:
        std = scale / math.sqrt(math.prod(leaf.shape[:-1])) if path[-1].key == "kernel" else scale
        leaves.append(jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32))
    return treedef.unflatten(leaves)
