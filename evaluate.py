"""Evaluate a trained model on a split: NELBO, IWAE bound, bits/dim, reconstruction, active units.

    python evaluate.py --workdir runs/default --split test --iwae_samples 5000

Writes DIR/eval_<split>.json. See jaxae/evaluation.py for how each number is computed.
"""

from __future__ import annotations

import json
import os
import sys

from jaxae import cli, distributed, io
from jaxae.config import ConfigError


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a train.py work directory")
    parser.add_argument("--split", default="test", help="TFDS split to evaluate (default: test)")
    parser.add_argument("--iwae_samples", type=int, default=5000,
                        help="k of the IWAE bound (default: 5000, as Burda et al.; 0 skips it)")
    parser.add_argument("--batch_size", type=int, default=100, help="images per batch (default: 100)")
    parser.add_argument("--chunk", type=int, default=500,
                        help="importance samples per compiled pass; bounds memory, not the result (default: 500)")
    parser.add_argument("--num_images", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--data_dir", default=None, help="override the run's TFDS data dir")
    parser.add_argument("--manual_dir", default=None, help="override the run's TFDS manual dir")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--measure_peak", action="store_true",
                        help="also time a float32 matmul to report the fraction of the machine's peak")
    cli.add_dataclass_flags(parser, distributed.Cluster)
    args = parser.parse_args(argv)
    for name in ("batch_size", "chunk"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.iwae_samples < 0:
        raise ConfigError(f"--iwae_samples must be >= 0, got {args.iwae_samples}")
    if args.num_images is not None and args.num_images <= 0:
        raise ConfigError(f"--num_images must be > 0, got {args.num_images}")
    cli.quiet_libraries()
    distributed.initialize(cli.dataclass_from_args(args, distributed.Cluster))  # Before any other JAX call.

    import jax

    from jaxae import data, evaluation, inputs, workdir

    config = workdir.load_config(args.workdir)
    overrides = {k: getattr(args, k) for k in ("data_dir", "manual_dir") if getattr(args, k) is not None}
    config = config.replace(**overrides)
    model, params, step = workdir.load_model(args.workdir)
    builder = distributed.primary_first(lambda: data.prepared_builder(config.data), "prepare_dataset")
    split = data.load_split(builder, args.split)
    images = split.images[:args.num_images]
    labels = None if split.labels is None else split.labels[:args.num_images]
    if args.batch_size % jax.device_count():
        raise ConfigError(f"--batch_size {args.batch_size} must be divisible by the {jax.device_count()} devices")
    primary = distributed.is_primary()  # Every process evaluates its rows of each batch; process 0 reports.
    if primary:
        print(f"jaxae: evaluating step {step} of {args.workdir} on {len(images)} {config.data.dataset}/{args.split} "
              f"images with IWAE k={args.iwae_samples} on {jax.device_count()} {jax.default_backend()} device(s)")
    result = evaluation.evaluate_full(model, params, images, inputs.eval_key(), labels=labels,
                                      iwae_samples=args.iwae_samples, batch_size=args.batch_size, chunk=args.chunk,
                                      progress=not args.no_progress and primary)
    result.update(step=step, split=args.split, dataset=config.data.dataset, input_mode=model.spec.mode,
                  backend=jax.default_backend(), devices=jax.device_count(), processes=jax.process_count())
    if args.measure_peak and args.iwae_samples:
        from jaxae.perf import matmul_peak_flops

        result["matmul_peak_flops_per_sec"] = matmul_peak_flops()
        result["fraction_of_peak"] = result["achieved_flops_per_sec"] / result["matmul_peak_flops_per_sec"]
    if not primary:
        return
    path = os.path.join(args.workdir, f"eval_{args.split}.json")
    io.write_text(path, json.dumps(result, indent=2))
    parts = []
    if "nelbo" in result:
        parts.append(f"nelbo {result['nelbo']:.2f} nats ({result['bpd']:.4f} bits/dim)")
    if "nll_iwae" in result:
        parts.append(f"nll_iwae(k={args.iwae_samples}) {result['nll_iwae']:.2f} nats "
                     f"({result['bpd_iwae']:.4f} bits/dim)")
    parts.append(f"recon {result['recon']:.2f}")
    if "kl" in result:
        parts.append(f"kl {result['kl']:.2f}")
    parts += [f"mse {result['mse']:.2f}", f"active units {result['active_units']}/{model.latent_dim}",
              f"{result['images_per_sec']:.1f} images/s"]
    summary = ", ".join(parts)
    if "achieved_flops_per_sec" in result:
        summary += f", {result['achieved_flops_per_sec'] / 1e9:.1f} GFLOP/s"
    if "fraction_of_peak" in result:
        summary += (f" = {100 * result['fraction_of_peak']:.0f}% of the measured float32 matmul peak "
                    f"({result['matmul_peak_flops_per_sec'] / 1e9:.0f} GFLOP/s)")
    print(summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
