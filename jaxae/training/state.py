"""The train state, the optimizer and its schedules, and the parameter moving average."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from jaxae.config import BURDA_STAGES, OptimizerConfig


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar; params and opt_state: pytrees of arrays; skipped: int32
    count of updates skipped (loss or gradient not finite, or gradient norm above the
    skip threshold); ema_params: exponential moving average of params (None: off)."""

    step: jax.Array
    params: Any
    opt_state: Any
    skipped: jax.Array
    ema_params: Any = None

    def eval_params(self) -> Any:
        """The parameters to evaluate and sample with: the moving average when kept."""
        return self.params if self.ema_params is None else self.ema_params


def learning_rate(opt: OptimizerConfig, total_steps: int, steps_per_epoch: int = 1) -> optax.Schedule | float:
    """The learning rate per step: constant (after an optional linear warm-up), warm-up then
    cosine decay to 0 at ``total_steps``, or Burda et al. (2015)'s schedule: lr * 10^(-i/7)
    for 3^i epochs, i = 0..7 (epochs of ``steps_per_epoch`` steps)."""
    if opt.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, opt.learning_rate, opt.warmup_steps,
                                                  max(total_steps, opt.warmup_steps + 1))
    if opt.lr_schedule == "burda":
        boundaries, epochs = {}, 0
        for i in range(BURDA_STAGES - 1):
            epochs += 3 ** i
            boundaries[epochs * steps_per_epoch] = 10.0 ** (-1.0 / 7.0)
        return optax.piecewise_constant_schedule(opt.learning_rate, boundaries)
    if opt.warmup_steps:
        return optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
    return opt.learning_rate


def make_optimizer(opt: OptimizerConfig, total_steps: int, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Adam (epsilon ``adam_eps``) with the configured schedule and optional global-norm clipping."""
    adam = optax.adam(learning_rate(opt, total_steps, steps_per_epoch), eps=opt.adam_eps)
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip), adam) if opt.grad_clip else adam


# Options for programs that run once and briefly (initialisation): compiled without XLA's
# backend optimizations. On CPU, optimizing the random-number code of each initializer costs
# about a second (the vqvae test network's init: 23 s optimized, 3 s without), to save
# microseconds of run time.
RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_once(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` compiled as one program with RUN_ONCE_OPTIONS (run eagerly, each of its ops
    would be compiled on its own); traced in place when called inside a transformation
    (``jax.jit``, ``jax.eval_shape``), whose own compilation then applies."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        return fn(*args)
    return jax.jit(fn, compiler_options=RUN_ONCE_OPTIONS)(*args)


def init_params(model, rng: jax.Array) -> Any:
    """``model.init(rng)``, compiled by :func:`run_once`."""
    return run_once(model.init, rng)


def create_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array,
                       ema: bool = False) -> TrainState:
    """Fresh parameters from ``model.init(rng)``; with ``ema`` also their moving average
    (starting equal). Compiled by :func:`run_once`."""

    def create(rng: jax.Array) -> TrainState:
        params = model.init(rng)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                          skipped=jnp.zeros((), jnp.int32), ema_params=jax.tree.map(jnp.copy, params) if ema else None)

    return run_once(create, rng)


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """One step of the moving average: decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
