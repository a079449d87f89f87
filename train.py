"""Train an autoencoder model and write checkpoints, metrics and image grids to --workdir.

    python train.py                                   # VAE on the embedded mnist_5k digits
    python train.py --dataset binarized_mnist --manual_dir ../shared/data/binarized_mnist
    python train.py --config benchmarks/presets/vae_burda_dynamic.py --workdir runs/burda
"""

from __future__ import annotations

import json
import sys

from jaxae import cli, distributed


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/default", help="output directory (default: runs/default)")
    parser.add_argument("--reset", action="store_true", help="discard a previous run in --workdir")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    cli.add_config_flags(parser)
    cli.add_dataclass_flags(parser, distributed.Cluster)
    args = parser.parse_args(argv)
    config = cli.config_from_args(args)
    cli.quiet_libraries()
    processes = distributed.initialize(cli.dataclass_from_args(args, distributed.Cluster))  # Before any JAX call.

    import jax

    from jaxae.training import train_and_evaluate

    primary = distributed.is_primary()  # Only process 0 prints and writes files.
    if primary:
        print(f"jaxae: training {config.model.family}/{config.model.arch} on {config.data.dataset} with "
              f"{jax.device_count()} {jax.default_backend()} device(s) in {processes}; workdir {args.workdir}")
    final = train_and_evaluate(config, args.workdir, reset=args.reset, progress=not args.no_progress)
    if primary:
        print("final:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()}))


if __name__ == "__main__":
    sys.exit(cli.run(main))
