"""XLA's planned device memory of one hvae train step, per preset, batch size, compute dtype,
rematerialization and gradient accumulation, without running anything.

    python benchmarks/memory.py                       # both presets at batch 8, remat off/on, both dtypes
    python benchmarks/memory.py --presets hvae_64 --batch_sizes 8,32 --grad_accum 1,4

Each row compiles the one train step (jaxae.training.step, Adam, the 10-logistic mixture
likelihood on RGB images of the preset's size) for abstract inputs (nothing is allocated
or run) and reports ``compiled.memory_analysis()``: arguments (train state and uint8
batch), outputs, temporaries (the activations kept for the backward pass and the
workspace), and the total XLA plans for one call, with the state donated as train.py
does (arguments + outputs - aliased + temporaries). It is the plan of XLA's CPU backend
(forced here, so no accelerator is needed; see the note on --remat below the imports):
the same buffer assignment as on GPU but other fusions, so read it as an estimate of a
GPU's, to be confirmed on the device (the allocator's ``peak_bytes_in_use``). The
training loop adds the device-resident training split (uint8) to this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# The plan is made on the CPU backend (no accelerator needed). XLA:CPU removes the
# optimization barriers that jax.checkpoint (--remat) places before its common-subexpression
# pass, which then merges the recomputation back into the forward pass; GPU and TPU keep
# them until scheduling. Skipping that pass makes the CPU plan keep the recomputation as
# they do. Set before JAX starts its backend.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_disable_hlo_passes=cse_barrier_expander").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # This checkout's jaxae.
from jaxae import hardware, training  # noqa: E402
from jaxae.config import DTYPES, HVAE_PRESETS, Config  # noqa: E402
from jaxae.data import InputSpec  # noqa: E402
from jaxae.families import make_model  # noqa: E402

GIB = 1 << 30


def planned_memory(preset: str, batch_size: int, dtype: str, remat: bool, grad_accum: int) -> dict:
    """Compiles one train step of ``preset`` for abstract inputs; XLA's plan in bytes and the compile time."""
    res = HVAE_PRESETS[preset]["stages"][0][0]
    spec = InputSpec((res, res, 3), 0, "grey")
    config = Config.create(model="hvae", arch=preset, likelihood="logistic_mixture", binarize="none",
                           batch_size=batch_size, dtype=dtype, remat=remat, grad_accum=grad_accum)
    model = make_model(config, spec)
    optimizer = training.make_optimizer(config.optimizer, 10_000)
    state = jax.eval_shape(lambda key: training.create_train_state(model, optimizer, key), jax.random.key(0))
    batch = {"image": jax.ShapeDtypeStruct((batch_size, res, res, 3), jnp.uint8)}
    step = training.make_train_step(model, optimizer, grad_accum=grad_accum)
    began = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0, compiler_options=hardware.compiler_options()).lower(
        state, batch, jax.random.key(1)).compile()
    seconds = time.perf_counter() - began
    m = compiled.memory_analysis()
    params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    return {"preset": preset, "batch_size": batch_size, "dtype": dtype, "remat": remat, "grad_accum": grad_accum,
            "params": params, "arguments": m.argument_size_in_bytes, "temporaries": m.temp_size_in_bytes,
            "total": m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes, "compile_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="hvae_64,hvae_256", help="comma-separated hvae presets")
    parser.add_argument("--batch_sizes", default="8", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated compute dtypes")
    parser.add_argument("--remat", default="off,on", help="off, on or off,on")
    parser.add_argument("--grad_accum", default="1", help="comma-separated microbatch counts")
    args = parser.parse_args()
    presets = args.presets.split(",")
    unknown = sorted(set(presets) - set(HVAE_PRESETS))
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; known: {', '.join(HVAE_PRESETS)}")
    print(f"XLA's planned memory of one train step, {jax.default_backend()} backend (compiled, not run)")
    print("| preset | params | batch | grad_accum | dtype | remat | state + batch GiB | temporaries GiB "
          "| planned GiB | compile s |")
    print("| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for preset in presets:
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            for accum in (int(k) for k in args.grad_accum.split(",")):
                for dtype in args.dtypes.split(","):
                    for remat in (flag == "on" for flag in args.remat.split(",")):
                        row = planned_memory(preset, batch_size, dtype, remat, accum)
                        print(f"| {preset} | {row['params'] / 1e6:.1f} M | {batch_size} | {accum} | {dtype} "
                              f"| {'on' if remat else 'off'} | {row['arguments'] / GIB:.2f} "
                              f"| {row['temporaries'] / GIB:.2f} | {row['total'] / GIB:.2f} "
                              f"| {row['compile_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
