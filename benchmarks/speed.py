"""Speed benchmark: train / evaluation / sampling throughput, the fraction of the machine's
measured matmul peak, and memory, per model preset and batch size.

    python benchmarks/speed.py                 # all presets, ~4 minutes on 2 CPU cores
    python benchmarks/speed.py --presets mlp_flax --batch_sizes 128
    python benchmarks/speed.py --synthetic --dtype bfloat16 --batch_sizes 512,4096   # no TFDS needed

Data: the embedded mnist_5k digits (offline), or with ``--synthetic`` random uint8
images of the same shape (28x28x1; then neither tensorflow_datasets nor tensorboardX is
imported, so it runs where only jax, flax, optax and orbax are installed). The split is
kept on the device as uint8 and batches are drawn there by the same fused ``lax.scan``
loop train.py uses (steps_per_call steps per call).

Columns: FLOPs per image come from XLA's cost analysis of one loop-free train step;
``% peak`` divides the achieved train FLOP/s by a matmul peak measured in the same run
in the rows' ``--dtype`` (float32; bfloat16 with ``--dtype bfloat16``, and always also
measured on accelerators). ``XLA MiB``: the device memory XLA plans for one fused train
call (arguments + outputs - donated + temporaries). ``peak MiB``: on GPU/TPU the
allocator's peak bytes in use so far (``device.memory_stats()``, so it never falls
between rows); on CPU the growth of the process's peak resident memory during the row
(0: it stayed below an earlier row's peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # This checkout's jaxae.
from jaxae import data, evaluation, hardware, inputs, perf, sampling, training  # noqa: E402
from jaxae.config import DTYPES, Config, DataConfig, ModelConfig  # noqa: E402
from jaxae.families import make_model  # noqa: E402

PRESETS = {
    "mlp_flax": dict(arch="mlp", hidden_dims=(500,), latent_dim=20),         # Flax VAE example sizes
    "mlp_default": dict(arch="mlp", hidden_dims=(512, 256), latent_dim=16),  # train.py's default
    "mlp_burda": dict(arch="mlp", hidden_dims=(200, 200), latent_dim=50, activation="tanh"),
    "conv": dict(arch="conv", channels=(32, 64), latent_dim=16),
    "hvae_mnist": dict(model="hvae", arch="hvae_mnist"),  # Not in the default list: ~50 images/s on 2 CPU cores.
}
DEFAULT_PRESETS = ("mlp_flax", "mlp_default", "mlp_burda", "conv")
# On XLA:CPU the conv rows run one step per call, as train.py does (jaxae.hardware:
# XLA:CPU runs convolutions inside a lax.scan loop ~50x slower), and evaluate/sample fewer
# images, so the default benchmark stays within minutes. Accelerators use the full settings.
CPU_LIMITS = {"conv": {"eval_images": 1000, "sample_images": 250},
              "hvae_mnist": {"eval_images": 200, "sample_images": 64}}
SYNTHETIC_SHAPE = (28, 28, 1)
SYNTHETIC_EXAMPLES = 4500  # As many as mnist_5k's train split (more when a batch needs it).
MIB = 1 << 20


def synthetic_split(num_examples: int) -> tuple[data.Split, data.InputSpec]:
    """Random uint8 images (num_examples, 28, 28, 1), scored like 8-bit digits (dynamic binarization)."""
    images = np.random.default_rng(0).integers(0, 256, (num_examples, *SYNTHETIC_SHAPE), dtype=np.uint8)
    return data.Split(images=images, labels=None), data.InputSpec(SYNTHETIC_SHAPE, 10, "dynamic")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_call(preset: str, batch_size: int, split, spec, steps_per_call: int | None, dtype: str = "float32"):
    """The fused train call of ``preset`` on ``split``, compiled: returns (model, call, info).

    ``call()`` runs ``info["steps_per_call"]`` train steps in place (the state carried between
    calls, batches drawn on the device as train.py draws them) and returns their metrics;
    ``info`` also has ``flops_per_step`` (XLA's cost analysis), ``compile_seconds``,
    ``compiled`` and ``params()`` (the current parameters)."""
    config = Config.create(batch_size=batch_size, steps_per_call=steps_per_call, dtype=dtype, **PRESETS[preset])
    model = make_model(config, spec)
    steps_per_call = hardware.steps_per_call(steps_per_call, model.convolutional)  # The rule train.py uses.
    optimizer = training.make_optimizer(config.optimizer, 10_000)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    step = training.make_train_step(model, optimizer)
    images = jax.device_put(split.images)
    batch = {"image": images[:batch_size]}
    flops_step = perf.flops_of(step, state, batch, jax.random.key(1))
    run = training.make_multi_step(step, batch_size, len(split), steps_per_call)
    data_key, step_key = jax.random.key(2), jax.random.key(3)
    perm = inputs.epoch_permutation(data_key, 0, len(split))
    began = time.perf_counter()
    compiled = run.lower(state, perm, images, None, data_key, step_key).compile()
    compile_seconds = time.perf_counter() - began

    def call():
        nonlocal state, perm
        state, perm, out = compiled(state, perm, images, None, data_key, step_key)
        return out

    return model, call, {"steps_per_call": steps_per_call, "flops_per_step": flops_step,
                         "compile_seconds": compile_seconds, "compiled": compiled, "params": lambda: state.params}


def bench(preset: str, batch_size: int, split, spec, steps_per_call: int | None, seconds: float,
          dtype: str = "float32") -> dict:
    limits = CPU_LIMITS.get(preset, {}) if jax.default_backend() == "cpu" else {}
    eval_images, sample_images = limits.get("eval_images", len(split)), limits.get("sample_images", 1000)
    rss_before = _peak_rss_mib()
    model, call, info = train_call(preset, batch_size, split, spec, steps_per_call, dtype)
    steps_per_call, flops_step = info["steps_per_call"], info["flops_per_step"]
    compile_seconds = info["compile_seconds"]
    per_call = perf.time_steady(call, seconds, warmup=1)
    train_ips = batch_size * steps_per_call / per_call
    images = jax.device_put(split.images)
    eval_split = images[:eval_images]
    params = info["params"]()
    eval_seconds = perf.time_steady(lambda: evaluation.evaluate(model, params, eval_split, jax.random.key(4),
                                                                batch_size=min(500, eval_images)), seconds / 2)
    sample = hardware.jit(lambda p, k: sampling.sample_prior(model, p, k, sample_images))
    sample_seconds = perf.time_steady(lambda: sample(params, jax.random.key(5)), seconds / 2)
    device_peak = perf.device_peak_bytes()
    xla_bytes = perf.compiled_bytes(info["compiled"])
    return {"preset": preset, "batch_size": batch_size, "dtype": dtype, "steps_per_call": steps_per_call,
            "train_images_per_sec": train_ips, "compile_seconds": compile_seconds,
            "train_flops_per_image": flops_step / batch_size,
            "train_flops_per_sec": flops_step / batch_size * train_ips,
            "eval_images_per_sec": eval_images / eval_seconds, "sample_images_per_sec": sample_images / sample_seconds,
            "xla_train_call_mib": None if xla_bytes is None else xla_bytes / MIB,
            "device_peak_mib": None if device_peak is None else device_peak / MIB,
            "rss_growth_mib": None if device_peak is not None else max(0.0, _peak_rss_mib() - rss_before)}


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help=f"comma-separated presets of {', '.join(PRESETS)} (default: {', '.join(DEFAULT_PRESETS)})")
    parser.add_argument("--batch_sizes", default="128,512", help="comma-separated batch sizes")
    parser.add_argument("--steps_per_call", type=int, default=None,
                        help="steps fused per call (default: jaxae.hardware's choice, as train.py)")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing window per measurement")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype of the networks")
    parser.add_argument("--synthetic", action="store_true",
                        help="random uint8 28x28x1 images instead of TFDS mnist_5k (no tensorflow_datasets needed)")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    presets = args.presets.split(",")
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; known: {', '.join(PRESETS)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.synthetic:
        split, spec = synthetic_split(max(SYNTHETIC_EXAMPLES, 2 * max(batch_sizes)))
    else:
        builder = data.prepared_builder(DataConfig(data_dir=args.data_dir))
        split = data.load_split(builder, "train")
        spec = data.input_spec(DataConfig(), ModelConfig(), builder, split)
    accelerator = jax.default_backend() != "cpu"
    peaks = {name: perf.matmul_peak_flops(dtype=name) for name in DTYPES
             if name == "float32" or name == args.dtype or accelerator}
    print(f"{jax.device_count()} {jax.default_backend()} device(s) ({jax.devices()[0].device_kind}); "
          f"{'synthetic' if args.synthetic else 'mnist_5k'} data; compute {args.dtype}; measured matmul peak "
          + ", ".join(f"{name} {peak / 1e9:,.0f} GFLOP/s" for name, peak in peaks.items()))
    memory = "peak MiB" if perf.device_peak_bytes() is not None else "+RSS MiB"
    header = (f"{'preset':<12} {'batch':>5} {'train img/s':>11} {'compile s':>9} {'MFLOP/img':>9} "
              f"{'% peak':>6} {'eval img/s':>10} {'sample img/s':>12} {'XLA MiB':>8} {memory:>8}")
    print(header)
    rows = []
    for preset in presets:
        for batch_size in batch_sizes:
            row = bench(preset, batch_size, split, spec, args.steps_per_call, args.seconds, args.dtype)
            row["fraction_of_peak"] = row["train_flops_per_sec"] / peaks[args.dtype]
            rows.append(row)
            grown = row["device_peak_mib"] if row["device_peak_mib"] is not None else row["rss_growth_mib"]
            print(f"{preset:<12} {batch_size:>5} {row['train_images_per_sec']:>11,.0f} "
                  f"{row['compile_seconds']:>9.1f} {row['train_flops_per_image'] / 1e6:>9.2f} "
                  f"{100 * row['fraction_of_peak']:>5.0f}% {row['eval_images_per_sec']:>10,.0f} "
                  f"{row['sample_images_per_sec']:>12,.0f} {_mib(row['xla_train_call_mib']):>8} "
                  f"{_mib(grown):>8}", flush=True)
    peak_rss = _peak_rss_mib()
    print(f"peak resident memory {peak_rss:,.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
                       "dtype": args.dtype, "synthetic": args.synthetic,
                       "peak_flops_per_sec": peaks[args.dtype], "matmul_peaks_flops_per_sec": peaks,
                       "peak_rss_mib": peak_rss, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
