"""Multi-process runs: when jax.distributed starts, global arrays from host data, process-0-only
writing, and two real processes on localhost (CPU, gloo collectives) matching one process."""

import json
import os
import re
import signal
import socket
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from conftest import REPO
from jaxae import distributed
from jaxae.distributed import Cluster
from jaxae.errors import ConfigError
from test_cli import Background, call, process_env, save_digits_npz

SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "0"}


@pytest.fixture(scope="module")
def digits_npz(mnist5k, tmp_path_factory):
    return save_digits_npz(mnist5k, tmp_path_factory.mktemp("npz"))


@pytest.fixture
def cluster_env(monkeypatch):
    """This process's environment without any cluster's variables; returns a function that
    sets some (JAX's detection reads os.environ)."""
    prefixes = ("SLURM_", "OMPI_", "PMIX_", "JAX_", "TPU_", "MEGASCALE_", "KUBERNETES_SERVICE_HOST")
    for var in list(os.environ):
        if var.startswith(prefixes):
            monkeypatch.delenv(var)

    def set_env(variables):
        for var, value in variables.items():
            monkeypatch.setenv(var, value)

    return set_env


def test_one_process_unless_asked_or_detected(cluster_env):
    assert distributed.resolve(Cluster(), {}) == (None, "one process")
    cluster_env(dict(SLURM, SLURM_NTASKS="1"))                                      # srun -n 1
    assert distributed.resolve(Cluster(), {}) == (None, "one process")
    for var in SLURM:
        os.environ.pop(var)
    cluster_env({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1"})
    assert distributed.resolve(Cluster(), {})[0] is None


def test_flags_then_environment_give_all_three_settings(cluster_env):
    kwargs, why = distributed.resolve(Cluster("10.0.0.1:1234", 4, 3), {})
    assert kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert "4 processes" in why
    env = {"JAX_COORDINATOR_ADDRESS": "host:99", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    assert distributed.resolve(Cluster(), env)[0] == {"coordinator_address": "host:99", "num_processes": 2,
                                                      "process_id": 0}
    assert distributed.resolve(Cluster(process_id=1), env)[0]["process_id"] == 1   # A flag beats its variable.


def test_clusters_are_detected_by_jax_and_the_rest_left_to_it(cluster_env):
    """Detection is JAX's own (jax._src.clusters): every environment it knows, not a private list."""
    from jax._src.clusters import ClusterEnv

    known = {env.__name__ for env in ClusterEnv._cluster_types}
    assert {"SlurmCluster", "OmpiCluster", "K8sCluster", "GkeTpuCluster"} <= known
    cluster_env(SLURM)
    assert distributed.resolve(Cluster(), {}) == ({}, "SlurmCluster, 2 processes, detected by JAX")
    assert distributed.resolve(Cluster(coordinator_address="h:5"), {})[0] == {"coordinator_address": "h:5"}
    for var in SLURM:
        os.environ.pop(var)
    cluster_env({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:3", "OMPI_COMM_WORLD_SIZE": "8"})
    assert distributed.resolve(Cluster(), {}) == ({}, "OmpiCluster, 8 processes, detected by JAX")


def test_a_cluster_jax_cannot_count_is_a_one_line_error(cluster_env):
    cluster_env(dict(SLURM, SLURM_NTASKS="many"))
    with pytest.raises(ConfigError, match=r"^JAX detected SlurmCluster but could not count its processes "
                                          r"\(ValueError: .*\); pass --num_processes 1 for one process"):
        distributed.resolve(Cluster(), {})
    assert distributed.resolve(Cluster(num_processes=1), {})[0] is None


def test_num_processes_1_opts_out_even_inside_a_cluster(cluster_env):
    cluster_env(SLURM)
    assert distributed.resolve(Cluster(num_processes=1), {}) == (None, "one process (--num_processes 1)")
    assert distributed.resolve(Cluster(), {"JAX_NUM_PROCESSES": "1"})[0] is None


@pytest.mark.parametrize("cluster,env,message", [
    (Cluster(coordinator_address="localhost"), {}, "--coordinator_address 'localhost' must be HOST:PORT"),
    (Cluster(coordinator_address="h:70000"), {}, "port in 1..65535"),
    (Cluster(num_processes=0), {}, "--num_processes must be in 1..65536, got 0"),
    (Cluster("h:1", 2, 2), {}, "--process_id must be in 0..1, got 2"),
    (Cluster(process_id=-1), {}, "--process_id must be in 0..65535, got -1"),
    (Cluster(), {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' must be an integer"),
    (Cluster(process_id=1), {}, "also needs --coordinator_address (or JAX_COORDINATOR_ADDRESS), --num_processes"),
    (Cluster("h:1", 2), {}, "also needs --process_id (or JAX_PROCESS_ID); got only --coordinator_address h:1"),
])
def test_bad_or_partial_settings_are_one_line_errors(cluster, env, message, cluster_env):
    with pytest.raises(ConfigError) as error:
        distributed.resolve(cluster, env)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_put_builds_the_same_global_array_as_device_put():
    host = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    for spec in (PartitionSpec(), PartitionSpec("data")):
        sharding = NamedSharding(mesh, spec)
        committed = jax.device_put(host, jax.devices()[1])   # A local committed array works too.
        placed = distributed.put({"a": host, "b": committed, "none": None}, sharding)
        assert placed["none"] is None
        for value in (placed["a"], placed["b"]):
            assert value.sharding == sharding
            np.testing.assert_array_equal(distributed.to_host(value), host)


def test_batch_sharding_only_when_it_divides():
    assert distributed.batch_sharding(8, jax.devices()[:1]) is None
    assert distributed.batch_sharding(6, jax.devices()[:4]) is None
    sharding = distributed.batch_sharding(8, jax.devices()[:4])
    assert sharding.spec == PartitionSpec("data") and len(sharding.device_set) == 4
    assert distributed.replicated(sharding).spec == PartitionSpec()


@pytest.mark.slow
def test_only_process_0_writes_files_other_than_checkpoints(tfds_dir, tmp_path, monkeypatch, capsys):
    """Process 1's view (process index mocked): it trains and checkpoints, and writes nothing else."""
    from jaxae import training
    from jaxae.config import Config

    config = Config.create(data_dir=tfds_dir, steps=10, eval_every=5, checkpoint_every=5, hidden_dims=(16,),
                           latent_dim=4, steps_per_call=5, batch_size=32)
    monkeypatch.setattr(distributed, "is_primary", lambda: False)
    final = training.train_and_evaluate(config, str(tmp_path / "w"), progress=False)
    assert final["step"] == 10 and np.isfinite(final["test_nelbo"])
    assert os.listdir(tmp_path / "w") == ["checkpoints"]
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["10", "5"]
    assert "step 10/10" not in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(workdir, devices, *extra, flags, xla_cache):
    env = process_env(devices, xla_cache)
    for var in distributed.ENV.values():
        env.pop(var, None)
    return Background([sys.executable, os.path.join(REPO, "train.py"), "--workdir", workdir, *flags, *extra], env=env)


# The literal parts of Gloo's C++ connection log ("[Gloo] Rank 2 is connected to 3 peer ranks.
# Expected number of connected peer ranks is : 3"), which it writes to stdout piece by piece from
# several threads at once: the pieces and the numbers between them can land on separate lines.
GLOO_PIECES = re.compile(r"\[Gloo\]|Rank|is connected to|peer ranks\.?|Expected number of connected|is\s*:")


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_process_with_4_devices(digits_npz, tmp_path):
    """train.py as 2 processes x 2 CPU devices (jax.distributed, gloo collectives), streaming the
    training split (each process reads only its half of every batch from the memory-mapped
    copy), stopped at step 10 and resumed to 20, against one process with 4 devices holding the
    split on its devices, straight to 20: same global batches, so the same losses and
    parameters; only process 0 printed and wrote (one metrics line per evaluation, one
    TensorBoard file per run)."""
    from jaxae.workdir import load_model

    flags = ["--dataset", digits_npz, "--eval_every", "10", "--checkpoint_every", "10", "--steps_per_call", "5",
             "--hidden_dims", "32", "--latent_dim", "4", "--batch_size", "64", "--no_progress"]
    started = []

    def start_pair(steps):
        port = _free_port()
        started.extend(_train(tmp_path / "two", 2, "--steps", steps, "--input", "streaming", "--data_dir",
                              tmp_path / "cache", "--coordinator_address", f"localhost:{port}",
                              "--num_processes", 2, "--process_id", i, flags=flags,
                              xla_cache=tmp_path / "xla_cache")  # The resumed pair loads the programs.
                       for i in (0, 1))
        return started[-2:]

    try:
        first = start_pair(10)
        code, out, err = call("train.py", "--workdir", tmp_path / "one", *flags, "--steps", 20)  # Meanwhile.
        assert code == 0, err[-3000:]
        assert "4 cpu device(s) in one process" in out
        for steps in (10, 20):
            results = [p.result() for p in (first if steps == 10 else start_pair(steps))]
            for result in results:
                assert result.returncode == 0, result.stderr[-3000:]
            assert "4 cpu device(s) in process 0 of 2" in results[0].stdout
            assert f"step {steps}/{steps}" in results[0].stdout
            # Silent: what is left of its stdout without Gloo's log pieces is numbers and
            # whitespace (anything jaxae prints has words).
            leftover = GLOO_PIECES.sub("", results[1].stdout)
            assert re.fullmatch(r"[\d\s]*", leftover), leftover
    finally:
        for process in started:
            process.stop()

    def metrics(name):
        with open(tmp_path / name / "metrics.jsonl") as f:
            return [json.loads(line) for line in f]

    a, b = metrics("one"), metrics("two")
    assert [m["step"] for m in b] == [10, 20]                   # Written once, not once per process.
    for x, y in zip(a, b):
        for name in ("train_loss", "test_nelbo", "test_kl"):
            np.testing.assert_allclose(y[name], x[name], rtol=1e-5)
    assert a[-1]["test_nelbo"] < a[0]["test_nelbo"]
    assert len(os.listdir(tmp_path / "two" / "tensorboard")) == 2   # One per run (= per resume), as with one process.
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
    _, params_one, step_one = load_model(str(tmp_path / "one"))
    _, params_two, step_two = load_model(str(tmp_path / "two"))
    assert step_one == step_two == 20
    for x, y in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(digits_npz, tmp_path):
    """Preemption reaching one host only: process 1 gets SIGTERM after the first evaluation.
    The processes agree at the end of the chunk (jaxae.distributed.stop_agreed), so both stop
    after the same chunk, save that step together (one collective Orbax save) and exit 130;
    deciding alone, process 1 would stop a chunk earlier and the collectives would no longer
    pair up."""
    flags = ["--dataset", digits_npz, "--eval_every", 20, "--checkpoint_every", 100000, "--steps_per_call", 5,
             "--hidden_dims", 32, "--latent_dim", 4, "--batch_size", 64, "--steps", 100000, "--no_progress"]
    workdir = tmp_path / "run"
    port = _free_port()
    pair = [_train(workdir, 2, "--coordinator_address", f"localhost:{port}", "--num_processes", 2, "--process_id", i,
                   flags=flags, xla_cache=None) for i in (0, 1)]
    pair[1].signal_after(workdir / "metrics.jsonl", signal.SIGTERM, 0.5)
    try:
        results = [process.result(timeout=300) for process in pair]
    finally:
        for process in pair:
            process.stop()
    for result in results:
        assert result.returncode == 130, result.stderr[-3000:]
    saved = sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
    assert len(saved) == 1 and 20 <= saved[0] < 100000 and saved[0] % 5 == 0, saved
    for result in results:
        assert f"saved a checkpoint at step {saved[0]}" in result.stderr and "Traceback" not in result.stderr
