"""Measuring speed against the hardware: FLOPs of a compiled function, the machine's
measured matmul peak, steady-state timing, and memory."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp

from jaxae import hardware


def flops_of(fn: Callable, *args, static_argnums: tuple[int, ...] = ()) -> float:
    """FLOPs XLA counts for one call of ``fn(*args)`` (0.0 if the backend does not say).

    XLA counts a loop body once, whatever its trip count: measure loop-free functions.
    """
    compiled = jax.jit(fn, static_argnums=static_argnums).lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def time_steady(fn: Callable[[], object], min_seconds: float = 1.0, warmup: int = 1) -> float:
    """Median-free steady-state seconds per call of ``fn`` (after ``warmup`` calls), blocking on results."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    calls, began = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn())
        calls += 1
        elapsed = time.perf_counter() - began
        if elapsed >= min_seconds:
            return elapsed / calls


def matmul_peak_flops(size: int | None = None, dtype=jnp.float32, min_seconds: float = 1.0) -> float:
    """The machine's achievable FLOP/s in ``dtype``: the best of a few timed (size x size) @
    (size x size) matmuls. size: 2048 on CPU, 8192 on accelerators (large enough to
    keep their matrix units busy). On CPU the best of XLA's two matmul implementations,
    YNNPACK's (jaxae's programs use it) and its own Eigen one (2048: ~15% faster here)."""
    cpu = jax.default_backend() == "cpu"
    size = size or (2048 if cpu else 8192)
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    variants = [hardware.compiler_options()]
    if cpu and variants[0]:
        variants.append({hardware.YNN_OPTION: ""})
    best = float("inf")
    for options in variants:
        matmul = jax.jit(lambda x, y: x @ y, compiler_options=options)
        best = min(best, *(time_steady(lambda m=matmul: m(a, b), min_seconds / 3) for _ in range(3)))
    return 2.0 * size**3 / best


def compiled_bytes(compiled) -> int | None:
    """Device memory XLA plans for one call of a compiled function: arguments + outputs
    (less the donated buffers they share) + temporaries; None if the backend does not say."""
    try:
        m = compiled.memory_analysis()
    except NotImplementedError:
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def device_peak_bytes(device=None) -> int | None:
    """The device allocator's peak bytes in use since the process started (GPU/TPU), None on CPU."""
    stats = (device or jax.devices()[0]).memory_stats()
    return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])
