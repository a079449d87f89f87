"""Defaults that depend on the hardware, chosen in one place."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

STEPS_PER_CALL = 50


def steps_per_call(requested: int | None, convolutional: bool, backend: str | None = None) -> int:
    """Train steps fused into one compiled call (a ``lax.scan``): ``requested`` when set, else
    50, except 1 for convolutional networks on CPU. XLA:CPU runs convolutions inside a
    loop body over 10x slower than the same step outside one (measured: hvae_mnist,
    batch 32, 3 vs 45 images/s on 2 cores), while a conv step is long enough that
    dispatching it alone costs nothing; MLPs keep the fused loop, which saves the
    per-step dispatch."""
    if requested is not None:
        return requested
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" and convolutional else STEPS_PER_CALL


# XLA:CPU's YNNPACK library fusions (jaxlib 0.10) take dots, reductions and convolutions by
# default, and run each convolution on one thread: on 2 cores a 3x3 conv of the conv preset
# ran at cpu/wall 1.00 and took twice as long as XLA's own (Eigen) convolution on both cores.
# jaxae keeps YNNPACK for dots and reductions (its dots are as fast or faster) and gives the
# convolutions back to XLA.
CPU_LIBRARY_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """XLA options for ``jax.jit(compiler_options=...)`` of jaxae's programs on ``backend`` (default:
    JAX's): on CPU, the YNNPACK fusions of CPU_LIBRARY_FUSIONS, unless XLA_FLAGS already sets
    them or this jaxlib does not know the option; elsewhere none."""
    backend = backend or jax.default_backend()
    if backend != "cpu" or YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(_accepted_cpu_options())


@functools.cache
def _accepted_cpu_options() -> tuple[tuple[str, str], ...]:
    """CPU options this jaxlib accepts (one trivial compilation, once per process)."""
    options = {YNN_OPTION: CPU_LIBRARY_FUSIONS}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(jnp.zeros((), jnp.float32)).compile()
    except Exception:  # noqa: BLE001 - an older or newer jaxlib without this option or these names.
        return ()
    return tuple(options.items())


def jit(fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(fn, **jit_kwargs)`` compiled with :func:`compiler_options`, which are looked up at
    the first call, so that importing or decorating starts no backend. Called on traced
    arguments (inside another ``jit`` or transformation) it is a plain nested ``jax.jit``,
    part of the outer program, whose options then apply."""
    nested = jax.jit(fn, **jit_kwargs)
    top = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal top
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            return nested(*args, **kwargs)
        if top is None:
            top = jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs)
        return top(*args, **kwargs)

    return call
