"""Speed benchmark: train / evaluation / sampling throughput and the fraction of the
machine's measured float32 matmul peak, per model preset and batch size.

    python benchmarks/speed.py                 # all presets, ~3 minutes on 2 CPU cores
    python benchmarks/speed.py --presets mlp_flax --batch_sizes 128

Data: the embedded mnist_5k digits (offline), kept on the device as uint8, batches drawn
there by the same fused ``lax.scan`` loop train.py uses (steps_per_call steps per call).
FLOPs per image come from XLA's cost analysis of one loop-free train step.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax

from jaxae import data, evaluation, perf, sampling, training
from jaxae.config import Config
from jaxae.models import make_model

PRESETS = {
    "mlp_flax": dict(arch="mlp", hidden_dims=(500,), latent_dim=20),         # Flax VAE example sizes
    "mlp_default": dict(arch="mlp", hidden_dims=(512, 256), latent_dim=16),  # train.py's default
    "mlp_burda": dict(arch="mlp", hidden_dims=(200, 200), latent_dim=50, activation="tanh"),
    "conv": dict(arch="conv", channels=(32, 64), latent_dim=16),
}


def bench(preset: str, batch_size: int, split, spec, steps_per_call: int, seconds: float) -> dict:
    config = Config(batch_size=batch_size, steps_per_call=steps_per_call, **PRESETS[preset])
    model = make_model(config, spec)
    optimizer = training.make_optimizer(config, 10_000)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    step = training.make_train_step(model, optimizer)
    images = jax.device_put(split.images)
    batch = {"image": images[:batch_size]}
    flops_step = perf.flops_of(step, state, batch, jax.random.key(1))
    run = training.make_multi_step(step, batch_size, len(split), steps_per_call)
    data_key, step_key = jax.random.key(2), jax.random.key(3)
    perm = data.epoch_permutation(data_key, 0, len(split))
    began = time.perf_counter()
    state, perm, metrics = run(state, perm, images, None, data_key, step_key)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - began

    def call():
        nonlocal state, perm
        state, perm, out = run(state, perm, images, None, data_key, step_key)
        return out

    per_call = perf.time_steady(call, seconds, warmup=1)
    train_ips = batch_size * steps_per_call / per_call
    eval_seconds = perf.time_steady(lambda: evaluation.evaluate(model, state.params, images, jax.random.key(4),
                                                                batch_size=500), seconds / 2)
    sample = jax.jit(lambda p, k: sampling.sample_prior(model, p, k, 1000))
    sample_seconds = perf.time_steady(lambda: sample(state.params, jax.random.key(5)), seconds / 2)
    return {"preset": preset, "batch_size": batch_size, "train_images_per_sec": train_ips,
            "compile_seconds": compile_seconds, "train_flops_per_image": flops_step / batch_size,
            "train_flops_per_sec": flops_step / batch_size * train_ips,
            "eval_images_per_sec": len(split) / eval_seconds, "sample_images_per_sec": 1000 / sample_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument("--batch_sizes", default="128,512", help="comma-separated batch sizes")
    parser.add_argument("--steps_per_call", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=4.0, help="timing window per measurement")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    config = Config(data_dir=args.data_dir)
    builder = data.prepared_builder(config)
    split = data.load_split(builder, "train")
    spec = data.input_spec(config, builder, split)
    peak = perf.matmul_peak_flops()
    print(f"{jax.device_count()} {jax.default_backend()} device(s) ({jax.devices()[0].device_kind}); "
          f"measured float32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    header = (f"{'preset':<12} {'batch':>5} {'train img/s':>11} {'compile s':>9} {'MFLOP/img':>9} "
              f"{'% peak':>6} {'eval img/s':>10} {'sample img/s':>12}")
    print(header)
    rows = []
    for preset in args.presets.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            row = bench(preset, batch_size, split, spec, args.steps_per_call, args.seconds)
            row["fraction_of_peak"] = row["train_flops_per_sec"] / peak
            rows.append(row)
            print(f"{preset:<12} {batch_size:>5} {row['train_images_per_sec']:>11,.0f} "
                  f"{row['compile_seconds']:>9.1f} {row['train_flops_per_image'] / 1e6:>9.2f} "
                  f"{100 * row['fraction_of_peak']:>5.0f}% {row['eval_images_per_sec']:>10,.0f} "
                  f"{row['sample_images_per_sec']:>12,.0f}", flush=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak_rss:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_flops_per_sec": peak, "peak_rss_mib": peak_rss, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
