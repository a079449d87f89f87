"""Evaluate a trained model on a split: NELBO, IWAE bound, bits/dim, reconstruction, active units
(for a conditional model, bounds on -log p(x | c); for one conditioned on a low-resolution image
x_low, the PSNR of its super-resolved images and of bicubic and nearest upsampling of x_low), and
the mutual information gap (mig) when the dataset provides factors of variation (e.g. shapes).

    python evaluate.py --workdir runs/default --split test --iwae_samples 5000
    python evaluate.py --pretrained NAME --num_images 100     # a model shipped with jaxae
    python evaluate.py --list_pretrained

Writes DIR/eval_<split>.json (with --pretrained: --output FILE, if given). See jaxae/evaluation.py
for how each number is computed.
"""

from __future__ import annotations

import json
import os
import sys

from jaxae import cli, distributed, io
from jaxae.config import ConfigError


# The PSNR rows of a model conditioned on a low-resolution image (jaxae.evaluation), in print order.
PSNR_ROWS = (("mean", "model (decoder mean at z = prior mode)"), ("sample", "model (one prior sample)"),
             ("bicubic", "bicubic upsampling of x_low"), ("nearest", "nearest upsampling of x_low"))


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    cli.add_model_source_flags(parser)
    parser.add_argument("--list_pretrained", action="store_true",
                        help="print the shipped models (name, dataset, protocol, metric, value; tab-separated)")
    parser.add_argument("--output", default=None, help="the JSON file to write (default: DIR/eval_<split>.json)")
    parser.add_argument("--split", default=None,
                        help="TFDS split to evaluate (default: test, or the shipped model's reporting split)")
    parser.add_argument("--iwae_samples", type=int, default=None,
                        help="k of the IWAE bound (default: 5000, as Burda et al., or the shipped model's k; "
                             "0 skips it)")
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
    if args.list_pretrained:
        from jaxae import pretrained

        for name in pretrained.names():
            print(pretrained.card(name).line())
        return
    for name in ("batch_size", "chunk"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.iwae_samples is not None and args.iwae_samples < 0:
        raise ConfigError(f"--iwae_samples must be >= 0, got {args.iwae_samples}")
    if args.num_images is not None and args.num_images <= 0:
        raise ConfigError(f"--num_images must be > 0, got {args.num_images}")
    cli.quiet_libraries()
    distributed.initialize(cli.dataclass_from_args(args, distributed.Cluster))  # Before any other JAX call.

    import jax

    from jaxae import data, evaluation, inputs, pretrained

    model, params, step, config, _ = cli.load_trained(args)
    card = pretrained.card(args.pretrained) if args.pretrained else None
    args.split = args.split or (card.split if card else "test")
    if args.iwae_samples is None:
        args.iwae_samples = card.iwae_samples if card else 5000
    if not model.bound:  # No importance-sampled bound (evaluation skips it): say k=0.
        args.iwae_samples = 0
    overrides = {k: getattr(args, k) for k in ("data_dir", "manual_dir") if getattr(args, k) is not None}
    config = config.replace(**overrides)
    builder = distributed.primary_first(lambda: data.prepared_builder(config.data), "prepare_dataset")
    split = data.load_split(builder, args.split, config.data.image_size)
    images = split.images[:args.num_images]
    labels = None if split.labels is None else split.labels[:args.num_images]
    factors = None if split.factors is None else split.factors[:args.num_images]
    if args.batch_size % jax.device_count():
        raise ConfigError(f"--batch_size {args.batch_size} must be divisible by the {jax.device_count()} devices")
    primary = distributed.is_primary()  # Every process evaluates its rows of each batch; process 0 reports.
    if primary:
        source = f"pretrained {args.pretrained}" if card else f"step {step} of {args.workdir}"
        print(f"jaxae: evaluating {source} on {len(images)} {config.data.dataset}/{args.split} "
              f"images with IWAE k={args.iwae_samples} on {jax.device_count()} {jax.default_backend()} device(s)")
    result = evaluation.evaluate_full(model, params, images, inputs.eval_key(), labels=labels, factors=factors,
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
    path = args.output or (None if card else os.path.join(args.workdir, f"eval_{args.split}.json"))
    if path is not None:
        io.write_text(path, json.dumps(result, indent=2))
    parts = []
    given = result["conditional_on"]
    if given and model.bound:  # The bounds are on -log p(x | c): say what c is.
        print(f"conditional model: nelbo and nll_iwae bound -log p(x | c), c = {given}")
    if "nelbo" in result:
        parts.append(f"nelbo {result['nelbo']:.2f} nats ({result['bpd']:.4f} bits/dim)")
    if "nll_iwae" in result:
        parts.append(f"nll_iwae(k={args.iwae_samples}) {result['nll_iwae']:.2f} nats "
                     f"({result['bpd_iwae']:.4f} bits/dim)")
    parts.append(f"recon {result['recon']:.2f}")
    parts += [f"{name} {value:.4f}" for name, value in result.items() if name.endswith("_bpd")]  # A family's parts.
    if "kl" in result:
        parts.append(f"kl {result['kl']:.2f}")
    parts += [f"mse {result['mse']:.2f}", f"active units {result['active_units']}/{model.latent_dim}"]
    if "mig" in result:
        parts.append(f"mig {result['mig']:.3f}")
    parts.append(f"{result['images_per_sec']:.1f} images/s")
    summary = ", ".join(parts)
    if "achieved_flops_per_sec" in result:
        summary += f", {result['achieved_flops_per_sec'] / 1e9:.1f} GFLOP/s"
    if "fraction_of_peak" in result:
        summary += (f" = {100 * result['fraction_of_peak']:.0f}% of the measured float32 matmul peak "
                    f"({result['matmul_peak_flops_per_sec'] / 1e9:.0f} GFLOP/s)")
    print(summary)
    psnrs = [(name, result[f"psnr_{key}"]) for key, name in PSNR_ROWS if f"psnr_{key}" in result]
    if psnrs:
        print("PSNR against x (dB, mean per image): " + ", ".join(f"{name} {value:.2f}" for name, value in psnrs))
    if card is not None and card.metric in result:
        print(f"{card.metric} {result[card.metric]:.2f} on these {len(images)} images; the card reports "
              f"{card.value:.2f} on {card.split} with k={card.iwae_samples}")
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
