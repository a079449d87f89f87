"""Several processes (hosts) training one model: when to start ``jax.distributed``,
which process writes files, and global arrays built from host data.

When a run is multi-process (:func:`resolve`), in order:

1. ``--num_processes 1`` (or ``JAX_NUM_PROCESSES=1``): one process, never initialised.
2. ``--coordinator_address``, ``--num_processes`` and ``--process_id`` all known — from
   the flags, else from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
   ``JAX_PROCESS_ID`` — start ``jax.distributed`` with them (any GPU or CPU hosts).
3. A cluster that JAX's own detection finds (``jax._src.clusters``: Slurm steps, Open
   MPI, Kubernetes with the ``kubernetes`` package, Cloud TPU and GKE TPU, and whatever
   else the installed JAX knows; opt-in methods such as mpi4py excluded) holding more
   than one process: ``jax.distributed.initialize()`` fills in what the flags left unset.
4. Otherwise: one process. Only some of the three flags given is an error.

Within a run every process executes the same program: the mesh spans all global
devices, the global batch is sharded over all of them, and each process reads the
whole (small, device-resident) split from TFDS and places it, replicated, on its own
devices (:func:`put`): every process holds identical data, so the arrays are
valid global arrays and the batches equal a one-process run's. Only process 0 writes
files other than checkpoints; Orbax checkpoints are saved and restored by all
processes together. The work directory must be on a file system all hosts share.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Callable

from jaxae.errors import ConfigError

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}
MAX_PROCESSES = 1 << 16


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How to join a multi-process run (flags of train.py, evaluate.py and sample.py).

    coordinator_address: ``host:port`` of process 0, reachable from every process.
    num_processes: processes in the run (1: never start jax.distributed).
    process_id: this process's index, 0 .. num_processes - 1.
    None: from the environment (module docstring), else detected, else one process.
    """

    coordinator_address: str | None = dataclasses.field(default=None, metadata={
        "help": "multi-process run: HOST:PORT of process 0; none: $JAX_COORDINATOR_ADDRESS"})
    num_processes: int | None = dataclasses.field(default=None, metadata={
        "help": "multi-process run: number of processes, 1 never starts jax.distributed; "
                "none: $JAX_NUM_PROCESSES, else detected"})
    process_id: int | None = dataclasses.field(default=None, metadata={
        "help": "multi-process run: this process's index; none: $JAX_PROCESS_ID, else detected"})


def _from_env(cluster: Cluster, environ: Mapping[str, str]) -> Cluster:
    """Fills unset fields from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID."""
    values = {}
    for name, var in ENV.items():
        value = getattr(cluster, name)
        if value is None and environ.get(var, "").strip():
            text = environ[var].strip()
            if name == "coordinator_address":
                value = text
            else:
                try:
                    value = int(text)
                except ValueError:
                    raise ConfigError(f"{var}={text!r} must be an integer") from None
        values[name] = value
    return Cluster(**values)


def detected_cluster() -> str | None:
    """Names the multi-process environment JAX's own cluster detection finds in this process's
    environment when it counts more than one process (e.g. "SlurmCluster, 4 processes");
    None for one process or no cluster. ConfigError when JAX finds a cluster but cannot
    count its processes."""
    try:
        from jax._src.clusters import ClusterEnv
        candidates = [env for env in ClusterEnv._cluster_types if not env.opt_in_only_method]
    except (ImportError, AttributeError):  # A JAX without it: only flags and JAX_* variables count.
        return None
    for env in candidates:
        if not env.is_env_present():
            continue
        try:
            count = int(env.get_process_count())
        except Exception as e:  # Each environment fails its own way (missing variable, API error).
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"JAX detected {env.__name__} but could not count its processes "
                              f"({type(e).__name__}: {first}); pass --num_processes 1 for one process, or "
                              "--coordinator_address, --num_processes and --process_id") from None
        return f"{env.__name__}, {count} processes" if count > 1 else None
    return None


def validate(cluster: Cluster) -> Cluster:
    """Checks the given fields; raises ConfigError naming the bad one."""
    address = cluster.coordinator_address
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator_address {address!r} must be HOST:PORT with a port in 1..65535")
    if cluster.num_processes is not None and not 0 < cluster.num_processes <= MAX_PROCESSES:
        raise ConfigError(f"--num_processes must be in 1..{MAX_PROCESSES}, got {cluster.num_processes}")
    if cluster.process_id is not None:
        limit = cluster.num_processes if cluster.num_processes is not None else MAX_PROCESSES
        if not 0 <= cluster.process_id < limit:
            raise ConfigError(f"--process_id must be in 0..{limit - 1}, got {cluster.process_id}")
    return cluster


def resolve(cluster: Cluster, environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """Decides whether to start jax.distributed (rule in the module docstring).

    ``environ`` (default os.environ) gives the JAX_* variables; cluster detection reads
    this process's environment, as JAX does.

    Returns (keyword arguments for ``jax.distributed.initialize``, or None for one
    process; a phrase saying why). Raises ConfigError on bad or partial settings.
    """
    environ = os.environ if environ is None else environ
    cluster = validate(_from_env(cluster, environ))
    given = {name: value for name, value in dataclasses.asdict(cluster).items() if value is not None}
    if cluster.num_processes == 1:
        return None, "one process (--num_processes 1)"
    if len(given) == len(ENV):
        return given, f"{cluster.num_processes} processes, coordinator {cluster.coordinator_address}"
    found = detected_cluster()
    if found is not None:
        return given, f"{found}, detected by JAX"
    if given:
        missing = ", ".join(f"--{name} (or {ENV[name]})" for name in ENV if name not in given)
        raise ConfigError(f"a multi-process run also needs {missing}; got only "
                          f"{', '.join(f'--{name} {value}' for name, value in given.items())}")
    return None, "one process"


def initialize(cluster: Cluster, environ: Mapping[str, str] | None = None) -> str:
    """Starts jax.distributed when :func:`resolve` says so; must run before any other JAX call.

    Returns a phrase describing the run (for the CLIs' banner).
    """
    kwargs, why = resolve(cluster, environ)
    if kwargs is None:
        return why
    import jax

    if not jax.config.jax_cpu_collectives_implementation:  # Cross-process collectives on CPU hosts.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"jax.distributed.initialize failed for {why} ({type(e).__name__}: {first[:300]}); "
                          "check --coordinator_address/--num_processes/--process_id, or pass --num_processes 1"
                          ) from None
    return f"process {jax.process_index()} of {jax.process_count()} ({why})"


def is_primary() -> bool:
    """True in process 0, the one that writes logs, metrics, images and config files."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches this point (no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def stop_agreed(requested: bool, sync_id: int) -> bool:
    """Whether training stops after the current chunk: the same answer in every process.

    One process: ``requested`` (a signal reached it). Several processes (all must call this
    at the same point, with the same ``sync_id``, which counts the calls): True when a
    signal reached any of them (their flags are all-gathered), or when JAX's preemption
    service reports a notice it received itself (``reached_preemption_sync_point``, e.g. a
    Cloud TPU maintenance event). Every process then saves the same step together; without
    this, hosts signalled at different moments would stop after different chunks and their
    collective checkpoint saves would no longer match.
    """
    import jax

    if jax.process_count() == 1:
        return requested
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(requested, np.int32))
    try:
        noticed = multihost_utils.reached_preemption_sync_point(sync_id)
    except RuntimeError:  # The preemption service is off (jax_enable_preemption_service).
        noticed = False
    return bool(np.any(flags)) or bool(noticed)


def primary_first(fn: Callable[[], Any], name: str) -> Any:
    """Runs ``fn`` in process 0, then (after a barrier) in the others: for work such as
    preparing a TFDS dataset that must not run concurrently on a shared directory. An
    error in process 0 is raised after the barrier, so no process is left waiting."""
    import jax

    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    if is_primary():
        try:
            result = fn()
        except Exception as e:  # Re-raised below, once every process has passed the barrier.
            error = e
    barrier(name)
    if error is not None:
        raise error
    return result if is_primary() else fn()


def put(tree: Any, sharding) -> Any:
    """``jax.device_put`` of every array leaf of ``tree`` for values every process holds alike.

    Each process copies the parts its own devices hold under ``sharding`` (all of it
    when replicated, its rows when sharded) from its host copy, so the result is a
    valid global array even when ``sharding`` spans other processes' devices, where a
    device_put from a committed local array would be a cross-host transfer. A Device
    ``sharding`` is a plain ``jax.device_put``.
    """
    import jax
    import numpy as np

    if isinstance(sharding, jax.Device):
        return jax.device_put(tree, sharding)

    def put_leaf(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put_leaf, tree)


def data_mesh(devices=None):
    """The 1-D mesh with the axis ``data`` over ``devices`` (default: all, of every process)
    that batches are sharded over."""
    import jax

    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def batch_sharding(batch_size: int, devices=None):
    """NamedSharding of a batch's leading axis over :func:`data_mesh` of ``devices``; None
    with one device or when ``batch_size`` does not divide evenly."""
    import jax

    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < 2 or batch_size % len(devices):
        return None
    return jax.sharding.NamedSharding(data_mesh(devices), jax.sharding.PartitionSpec("data"))


def replicated(sharding):
    """The fully replicated NamedSharding on the mesh of ``sharding``."""
    import jax

    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())


def to_host(tree: Any) -> Any:
    """numpy copies of the arrays in ``tree``; arrays sharded over other processes' devices
    are gathered from all processes first (every process must call this then)."""
    import jax
    import numpy as np

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(get, tree)
