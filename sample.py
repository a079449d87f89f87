"""Decode Gaussian latents of a trained model into an image grid.

    python sample.py --workdir runs/default --num_samples 64 --output samples.png
"""

from __future__ import annotations

import os
import sys

from jaxae import cli
from jaxae.config import ConfigError


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a train.py work directory")
    parser.add_argument("--num_samples", type=int, default=64, help="images to draw (default: 64)")
    parser.add_argument("--output", default="samples.png", help="PNG grid to write (default: samples.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default: 0)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="scale of the N(0, I) latents (default: 1.0)")
    parser.add_argument("--save_array", default=None, help="also write the images, float32 in [0, 1], as .npy")
    args = parser.parse_args(argv)
    if not 0 < args.num_samples <= 100_000:
        raise ConfigError(f"--num_samples must be in 1..100000, got {args.num_samples}")
    if not args.temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {args.temperature}")
    if not args.output.lower().endswith(".png"):
        raise ConfigError(f"--output {args.output!r} must end in .png")
    if args.save_array is not None and not args.save_array.endswith(".npy"):
        raise ConfigError(f"--save_array {args.save_array!r} must end in .npy")
    for path in filter(None, (args.output, args.save_array)):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write {path!r}: {folder!r} is not a writable directory")
    cli.quiet_libraries()

    import jax
    import numpy as np

    from jaxae import images, sampling
    from jaxae.checkpoints import load_model

    model, params, step = load_model(args.workdir)
    backend = jax.default_backend()
    print(f"jaxae: sampling {args.num_samples} images from step {step} of {args.workdir} on "
          f"{jax.device_count()} {backend} device(s) ({jax.devices()[0].device_kind})")
    samples = np.asarray(sampling.sample_prior(model, params, jax.random.key(args.seed), args.num_samples,
                                               args.temperature))
    images.save_png(args.output, samples)
    print(f"wrote {args.output}")
    if args.save_array:
        np.save(args.save_array, samples.astype(np.float32))
        print(f"wrote {args.save_array} {samples.shape} float32 in [0, 1]")


if __name__ == "__main__":
    sys.exit(cli.run(main))
