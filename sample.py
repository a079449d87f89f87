"""Draw images from a trained model: prior samples, class-conditional samples,
super-resolution, reconstructions, interpolations, latent traversals and denoising.

    python sample.py --workdir runs/default --num_samples 64 --output samples.png
    python sample.py --workdir runs/cvae --label 7 --output sevens.png
    python sample.py --workdir runs/lowres --upscale low.png --num_samples 8 --output high.png
    python sample.py --workdir runs/ae --prior fitted --output samples.png
    python sample.py --workdir runs/default --interpolate 0 1 --output lerp.png
    python sample.py --pretrained NAME --num_samples 64 --output samples.png
"""

from __future__ import annotations

import os
import sys

from jaxae import cli, distributed
from jaxae.config import ConfigError

MODES = ("interpolate", "traverse", "reconstruct", "denoise", "upscale")


def _check_args(args) -> None:
    if not 0 < args.num_samples <= 100_000:
        raise ConfigError(f"--num_samples must be in 1..100000, got {args.num_samples}")
    try:
        args.temperature = [float(t) for t in args.temperature.split(",")]
    except ValueError:
        raise ConfigError(f"--temperature {args.temperature!r} is not a number or a comma-separated list") from None
    if not all(t > 0 for t in args.temperature):
        raise ConfigError(f"--temperature values must be > 0, got {args.temperature}")
    if not args.output.lower().endswith(".png"):
        raise ConfigError(f"--output {args.output!r} must end in .png")
    if args.save_array is not None and not args.save_array.endswith(".npy"):
        raise ConfigError(f"--save_array {args.save_array!r} must end in .npy")
    if sum(getattr(args, m) is not None for m in MODES) > 1:
        raise ConfigError(f"use at most one of {', '.join('--' + m for m in MODES)}")
    if args.reconstruct is not None and not 0 < args.reconstruct <= 10_000:
        raise ConfigError(f"--reconstruct must be in 1..10000, got {args.reconstruct}")
    if not 2 <= args.frames <= 100:
        raise ConfigError(f"--frames must be in 2..100, got {args.frames}")
    if args.denoise is not None and not os.path.isfile(args.denoise):
        raise ConfigError(f"--denoise {args.denoise!r} is not a file (a PNG image or a .npy array)")
    if args.upscale is not None and not os.path.isfile(args.upscale):
        raise ConfigError(f"--upscale {args.upscale!r} is not a file (a PNG image)")
    for path in filter(None, (args.output, args.save_array)):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write {path!r}: {folder!r} is not a writable directory")


def _given(args, model, num: int):
    """--label / --upscale -> the per-sample conditions (or None), the samples per grid row (or
    None) and the low-res input (1, h, w, C) of --upscale (or None), validated against the model."""
    import jax.numpy as jnp

    cond = model.conditioning
    if args.upscale is not None:
        if not cond.on_image:
            what = f"conditioned on {cond.describe()}" if cond.active else "unconditional"
            raise ConfigError(f"--upscale needs a model trained with --condition lowres; this {model.name} is {what}")
        low = _read_lowres(args.upscale, model)
        return jnp.repeat(low, num, axis=0), min(8, num), low
    if cond.on_image:
        raise ConfigError(f"this {model.name} is conditioned on {cond.describe()}: give one with --upscale LOW.png")
    return (*_labels(args.label, model, num), None)


def _labels(arg: str | None, model, num: int):
    """--label -> per-sample labels (or None), validated against the model."""
    import jax.numpy as jnp

    labelled = model.conditioning.kind == "label"
    if arg is None:
        if not labelled:
            return None, None
        arg = "all"
    if not labelled:
        raise ConfigError(f"--label needs a class-conditional model (--model cvae, or --conditional); "
                          f"this {model.name} is not")
    classes = model.spec.num_classes
    if arg == "all":
        per_class = max(1, num // classes)
        return jnp.repeat(jnp.arange(classes), per_class), per_class
    if not arg.isdigit() or int(arg) >= classes:
        raise ConfigError(f"--label {arg!r} is not a class of this model: use 0..{classes - 1} or all")
    return jnp.full((num,), int(arg)), None


def _test_split(config, args):
    from jaxae import data

    overrides = {k: getattr(args, k) for k in ("data_dir", "manual_dir") if getattr(args, k) is not None}
    config = config.replace(**overrides)
    return data.load_split(data.prepared_builder(config.data), config.data.eval_split, config.data.image_size)


def _read_png(path: str, channels: int):
    """A PNG (any image file PIL reads) -> (float32 (H, W, channels) in [0, 1], the file's own
    channel count: 1 for grey modes, 3 otherwise, alpha not counted). Raises PIL's errors."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        own = 1 if len([b for b in im.getbands() if b != "A"]) == 1 and im.mode != "P" else 3
        array = np.asarray(im.convert("L" if channels == 1 else "RGB"), np.float32) / 255.0
    return array.reshape(*array.shape[:2], channels), own


def _read_lowres(path: str, model):
    """The --upscale image -> float32 (1, H/F, W/F, C) in [0, 1]; ConfigError unless it has the
    model's low-res size and its number of channels."""
    import numpy as np
    from PIL import Image

    height, width, channels = model.conditioning.lowres_shape
    try:
        array, own = _read_png(path, channels)
    except (OSError, ValueError, Image.UnidentifiedImageError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--upscale {path!r} is not a readable image ({reason})") from None
    if array.shape[:2] != (height, width):
        side, full = model.conditioning.factor, model.spec.image_shape
        raise ConfigError(f"--upscale {path!r} is {array.shape[1]}x{array.shape[0]} pixels; this model upscales "
                          f"{width}x{height} images (its {full[1]}x{full[0]} images / --lowres_factor {side})")
    if own != channels:
        kinds = {1: "grey", 3: "RGB"}
        raise ConfigError(f"--upscale {path!r} is a {kinds[own]} image; this model's images are {kinds[channels]} "
                          f"({channels} channel{'s' if channels > 1 else ''})")
    return np.clip(array, 0.0, 1.0)[None]


def _read_noisy(path: str, model):
    """One PNG image, or a .npy array (N, H, W, C) / (H, W, C) in [0, 1] -> uint8 (N, H, W, C)."""
    import numpy as np
    from PIL import Image

    from jaxae.io import NPZ_ERRORS

    shape = model.spec.image_shape
    try:
        if path.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
                raise ValueError(f"it holds {getattr(array, 'dtype', type(array).__name__)}, not numbers")
            array = array.astype(np.float32)
        else:
            array, _ = _read_png(path, shape[2])
    except (*NPZ_ERRORS, Image.UnidentifiedImageError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--denoise {path!r} is not a readable image or .npy array of numbers ({reason})") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.shape[1:] != shape:
        raise ConfigError(f"--denoise image shape {tuple(array.shape[1:])} does not match the model's {shape}")
    scale = 1.0 if model.spec.mode == "binary" else 255.0
    return np.round(np.clip(array, 0.0, 1.0) * scale).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    cli.add_model_source_flags(parser)
    parser.add_argument("--data_dir", default=None,
                        help="override the run's TFDS data dir (modes that read test images)")
    parser.add_argument("--manual_dir", default=None, help="override the run's TFDS manual dir")
    parser.add_argument("--num_samples", type=int, default=64, help="images to draw (default: 64)")
    parser.add_argument("--output", default="samples.png", help="PNG grid to write (default: samples.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default: 0)")
    parser.add_argument("--temperature", default="1.0",
                        help="scale of the prior latents; for hvae one value or one per latent group, "
                             "coarsest first, comma-separated (default: 1.0)")
    parser.add_argument("--prior", choices=("standard", "fitted"), default=None,
                        help="standard: the model's own prior (N(0, I), or the family's, e.g. the "
                             "VampPrior), or the density fitted to the training codes (default: fitted "
                             "for the families without a prior of their own: ae, rae_l2, rae_gp; "
                             "standard otherwise)")
    parser.add_argument("--label", default=None,
                        help="class to draw (cvae): a number, or all for a row per class (default: all)")
    parser.add_argument("--interpolate", type=int, nargs=2, metavar=("A", "B"), default=None,
                        help="decode a row of codes between test images A and B")
    parser.add_argument("--traverse", type=int, metavar="INDEX", default=None,
                        help="vary each latent dim around test image INDEX's code (a row per dim)")
    parser.add_argument("--reconstruct", type=int, metavar="N", default=None,
                        help="reconstruct the first N test images (inputs above outputs)")
    parser.add_argument("--denoise", metavar="IMAGE_OR_NPY", default=None,
                        help="reconstruct clean images from a noisy PNG or .npy (N, H, W, C) in [0, 1]")
    parser.add_argument("--upscale", metavar="LOW.png", default=None,
                        help="super-resolution (a model trained with --condition lowres): draw --num_samples "
                             "images conditioned on this PNG of side H/F, W/F (grey or RGB as the model); the "
                             "grid's first column is the input, nearest-upsampled")
    parser.add_argument("--frames", type=int, default=10, help="frames per interpolation/traversal row")
    parser.add_argument("--save_array", default=None, help="also write the images, float32 in [0, 1], as .npy")
    cli.add_dataclass_flags(parser, distributed.Cluster)
    args = parser.parse_args(argv)
    _check_args(args)
    cli.quiet_libraries()
    distributed.initialize(cli.dataclass_from_args(args, distributed.Cluster))  # Before any other JAX call.

    import jax
    import numpy as np

    from jaxae import conditioning, images, inputs, priors, sampling
    model, params, step, config, folder = cli.load_trained(args)
    primary = distributed.is_primary()  # Every process computes the same images; process 0 writes them.
    if primary:
        source = f"pretrained {args.pretrained}" if args.pretrained else f"step {step} of {args.workdir}"
        print(f"jaxae: {model.name} from {source} on {jax.local_device_count()} "
              f"{jax.default_backend()} device(s) ({jax.devices()[0].device_kind})")

    def on_devices(num: int):
        """The sharding of a batch of ``num`` over the local devices (or None), and the params on its mesh."""
        sharding = distributed.batch_sharding(num, jax.local_devices())
        return sharding, params if sharding is None else distributed.put(params, distributed.replicated(sharding))

    num_cols = 8
    if args.interpolate or args.traverse is not None or args.reconstruct:
        test = _test_split(config, args)
        labels = test.labels
        count = len(test)
        picks = args.interpolate or [args.traverse if args.traverse is not None else 0]
        bad = [i for i in picks if not 0 <= i < count]
        if bad:
            raise ConfigError(f"test image index {bad[0]} is out of range 0..{count - 1}")
        if args.interpolate:
            idx = np.array(args.interpolate)
            out = sampling.interpolate(model, params, test.images[idx], None if labels is None else labels[idx],
                                       args.frames)
            num_cols = args.frames
        elif args.traverse is not None:
            idx = np.array([args.traverse])
            dims = min(model.latent_dim, 16)
            out = sampling.traverse(model, params, test.images[idx], None if labels is None else labels[idx],
                                    dims, args.frames)
            num_cols = args.frames
        else:
            n = min(args.reconstruct, count) // 8 * 8 or min(args.reconstruct, count)
            num_cols = min(8, n)
            sharding, placed = on_devices(n)
            shown, labels = test.images[:n], None if labels is None else labels[:n]
            if sharding is not None:
                shown, labels = distributed.put((shown, labels), sharding)
            recons = sampling.reconstruct(model, placed, shown, labels)
            out = sampling.interleave_rows(inputs.scaled(shown, model.spec), recons, num_cols)
    elif args.denoise is not None:
        noisy = _read_noisy(args.denoise, model)
        if model.conditioning.kind == "label":
            raise ConfigError(f"--denoise is not available for the label-conditioned {model.name}: it needs each "
                              "image's label")
        sharding, placed = on_devices(len(noisy))
        clean = sampling.reconstruct(model, placed, noisy if sharding is None else distributed.put(noisy, sharding))
        out = sampling.interleave_rows(inputs.scaled(noisy, model.spec), clean, 1) if len(noisy) == 1 else clean
        num_cols = min(8, len(noisy))
    else:
        prior_name = args.prior or ("standard" if model.has_prior else "fitted")
        prior = priors.load(folder) if prior_name == "fitted" else None
        if prior_name == "fitted" and prior is None:
            raise ConfigError(f"--prior fitted: {folder!r} holds no {priors.PRIOR_FILE}; retrain with "
                              "this version of train.py")
        if not model.has_prior and prior is None:
            raise ConfigError(f"an {model.name} has no prior of its own: use --prior fitted")
        given, per_class, low = _given(args, model, args.num_samples)
        num = args.num_samples if given is None else len(given)
        sharding, placed = on_devices(num)
        out = sampling.sample_prior(model, placed, jax.random.key(args.seed), num,
                                    model.noise_scale(args.temperature), given, prior, sharding=sharding)
        num_cols = per_class or min(8, num)
    out = np.asarray(out)
    shown = out
    if args.upscale is not None:  # Each row: the input, nearest-upsampled, then up to 8 samples.
        shown = sampling.beside(conditioning.upsample(low, model.spec.image_shape[:2]), out, num_cols)
        num_cols += 1
    if not primary:
        return
    images.save_png(args.output, np.asarray(shown), num_cols=num_cols)
    print(f"wrote {args.output} ({len(out)} images)")
    if args.save_array:
        np.save(args.save_array, out.astype(np.float32))
        print(f"wrote {args.save_array} {out.shape} float32 in [0, 1]")


if __name__ == "__main__":
    sys.exit(cli.run(main))
