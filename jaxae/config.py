"""Typed, validated run configuration, saved as JSON next to every run.

A :class:`Config` is built once (from flags or code), validated up front by
:func:`validate`, and is the only source of truth for how a model is built and
trained. ``config.json`` in the work directory is its JSON form; ``sample.py``
rebuilds the model from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

MODELS = ("vae", "beta_vae", "iwae", "cvae", "ae", "hvae")
INPUT_NOISE = ("none", "flip", "gaussian", "mask")
# Hierarchical VAE presets (``--model hvae``; jaxae/models/hvae.py): residual width, block
# bottleneck width, latent channels per group, and stages (resolution, encoder blocks,
# latent groups) from the image resolution down. hvae_mnist is for 28x28 images, the
# cifar presets for 32x32 (hvae_cifar_small is sized for a CPU; hvae_cifar for a GPU).
HVAE_PRESETS = {
    "hvae_mnist": {"width": 64, "bottleneck": 16, "zdim": 8,
                   "stages": ((28, 1, 1), (14, 2, 3), (7, 2, 3), (1, 2, 2))},
    "hvae_cifar_small": {"width": 64, "bottleneck": 16, "zdim": 8,
                         "stages": ((32, 2, 1), (16, 2, 2), (8, 2, 3), (4, 2, 3), (1, 2, 2))},
    "hvae_cifar": {"width": 256, "bottleneck": 64, "zdim": 16,
                   "stages": ((32, 4, 4), (16, 6, 6), (8, 6, 6), (4, 4, 4), (1, 2, 2))},
}
ARCHS = ("mlp", "mlp_flax", "mlp_burda", "conv", "resnet", *HVAE_PRESETS)
# MLP presets: the widths and nonlinearity they fix (they override --hidden_dims,
# --top_hidden_dims and --activation). Latent sizes stay --latent_dim / --top_latent_dim
# (Flax example: 20; Burda et al.: 50, or 100 and 50 with two stochastic layers).
MLP_PRESETS = {
    "mlp_flax": {"hidden_dims": (500,), "activation": "relu"},
    "mlp_burda": {"hidden_dims": (200, 200), "top_hidden_dims": (100, 100), "activation": "tanh"},
}
ACTIVATIONS = ("relu", "tanh", "gelu", "softplus")
LIKELIHOODS = ("bernoulli", "gaussian", "logistic_mixture")
BINARIZE = ("dynamic", "none")
LR_SCHEDULES = ("constant", "cosine")
PARALLEL = ("sharded", "pmap")
DTYPES = ("float32", "bfloat16")

# Fields that may change when a run is resumed in the same work directory: they do
# not change the model, the optimizer or the data the checkpoint was trained on.
RESUMABLE_FIELDS = frozenset(
    {"steps", "epochs", "eval_every", "checkpoint_every", "keep_checkpoints",
     "data_dir", "manual_dir", "steps_per_call", "max_nonfinite", "parallel", "dtype"}
)


class ConfigError(ValueError):
    """A bad setting or input. Its message is one line naming the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run.

    Data:
      dataset: TFDS name of an image dataset (``mnist_5k`` is embedded and offline).
      data_dir: TFDS data directory (None: TFDS's default).
      manual_dir: folder holding already-downloaded source files, so TFDS prepares
        the dataset without network access.
      train_split, eval_split: TFDS splits to train on and to evaluate on; any TFDS
        split expression, so a validation set can be held out of the training data
        (``train[:45000]`` and ``train[45000:]``). An eval split that is a slice of the
        whole training split is refused.
      binarize: ``dynamic`` draws a fresh Bernoulli binarization of 8-bit images at
        every training step and a fixed one (seed-independent) for evaluation, so
        the Bernoulli likelihood is a real likelihood; ``none`` scores grey levels
        in [0, 1] with the Bernoulli cross-entropy (the Flax-example convention;
        then the numbers are not log-likelihoods). Ignored for data that is already
        binary, such as ``binarized_mnist``.
    Model:
      model: model family; arch: encoder/decoder architecture: ``mlp`` (hidden_dims),
        the presets ``mlp_flax`` and ``mlp_burda`` (MLP_PRESETS), ``conv`` (channels,
        stride-2 stages) or ``resnet`` (the same stages with residual blocks); the
        hierarchical ``--model hvae`` takes one of HVAE_PRESETS.
      hidden_dims: MLP hidden layer widths (encoder; the decoder mirrors them).
      channels: conv feature widths per stride-2 stage.
      activation: hidden-layer nonlinearity (Burda et al. 2015 use tanh).
      latent_dim: size of the Gaussian latent z (of z1, the bottom layer, with two).
      stochastic_layers: 1, or 2 for Burda et al.'s x <-> z1 <-> z2 (MLP only); then
      top_latent_dim is z2's size and top_hidden_dims the widths between z1 and z2.
      likelihood: ``bernoulli``, ``gaussian`` (8-bit data, uniformly dequantized) or
        ``logistic_mixture`` (8-bit data: a discretized mixture of logistics per pixel,
        PixelCNN++-style, an exact discrete likelihood; see jaxae/likelihoods.py).
      gaussian_scale: fixed standard deviation of the Gaussian likelihood on the
        [0, 1] pixel scale, or None to learn one per pixel.
      num_mixtures: mixture components of ``logistic_mixture``.
    Objective (see jaxae/objectives.py):
      beta: weight of the KL term (``beta_vae``; 1 is the VAE); kl_warmup_steps: the KL
      weight rises linearly from 0 to beta over this many steps; free_bits: nats per
      latent dim below which the batch-averaged KL of that dim is not penalised.
      num_importance_samples: K of the IWAE objective (``iwae``; K=1 is the VAE).
      code_l2: weight of the L2 penalty on the code (``ae``).
      input_noise: corruption of the encoder input only (denoising): ``flip``
      (Bernoulli pixel flips with probability noise_level), ``gaussian`` (additive,
      std noise_level, clipped to [0, 1]) or ``mask`` (pixels zeroed with probability
      noise_level).
      hflip: flip each training image left-right with probability 1/2 (data
      augmentation, training only: evaluation never flips).
      latent_mixture: components of the Gaussian mixture fitted to the training codes
      after training (0: one full-covariance Gaussian), for ``sample.py --prior fitted``.
    Optimization:
      steps: number of training steps (``epochs`` overrides it when set).
      batch_size: global batch size; learning_rate: Adam's peak learning rate;
      lr_schedule: ``constant`` or ``cosine`` decay to 0 after ``warmup_steps``
      linear warm-up; grad_clip: global-norm clipping threshold (0: off);
      skip_threshold: skip (and count) updates whose gradient global norm exceeds
      this (0: off; VDVAE's stabiliser against rare huge gradients); ema_decay:
      keep an exponential moving average of the parameters with this decay and
      evaluate and sample with it (0: off; e.g. 0.999).
    Bookkeeping:
      seed: the one seed all randomness derives from; eval_every,
      checkpoint_every: in steps; keep_checkpoints: how many to keep;
      steps_per_call: training steps fused into one compiled call (``lax.scan``);
      max_nonfinite: stop after this many consecutive steps whose loss or gradient
      was NaN/Inf (each such update is skipped and counted).
      parallel: with several devices, ``sharded`` runs one jit over a Mesh (batch
      sharded, state replicated); ``pmap`` runs the same step under jax.pmap.
      dtype: compute dtype of the encoder/decoder layers (``bfloat16`` for speed on
      accelerators); params, the likelihood, the KL, the loss and Adam stay float32.
    """

    dataset: str = "mnist_5k"
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    binarize: str = "dynamic"

    model: str = "vae"
    arch: str = "mlp"
    hidden_dims: tuple[int, ...] = (512, 256)
    channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    latent_dim: int = 16
    stochastic_layers: int = 1
    top_latent_dim: int = 50
    top_hidden_dims: tuple[int, ...] = (100, 100)
    likelihood: str = "bernoulli"
    gaussian_scale: float | None = None
    num_mixtures: int = 10

    beta: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    num_importance_samples: int = 1
    code_l2: float = 0.0
    input_noise: str = "none"
    noise_level: float = 0.0
    hflip: bool = False
    latent_mixture: int = 0

    steps: int = 6000
    epochs: int | None = None
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    skip_threshold: float = 0.0
    ema_decay: float = 0.0

    seed: int = 0
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    steps_per_call: int = 50
    max_nonfinite: int = 20
    parallel: str = "sharded"
    dtype: str = "float32"

    def mlp_settings(self) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        """(hidden_dims, top_hidden_dims, activation) after applying an MLP preset."""
        preset = MLP_PRESETS.get(self.arch, {})
        return (preset.get("hidden_dims", self.hidden_dims), preset.get("top_hidden_dims", self.top_hidden_dims),
                preset.get("activation", self.activation))

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known: {sorted(names)}")
        d = dict(d)
        for f in dataclasses.fields(cls):
            if f.type == "tuple[int, ...]" and isinstance(d.get(f.name), list):
                d[f.name] = tuple(d[f.name])
        return validate(cls(**d))

    @classmethod
    def load(cls, path: str) -> "Config":
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path!r}: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config {path!r} must hold a JSON object")
        return cls.from_dict(d)

    def save(self, path: str) -> None:
        """Writes atomically: a crash never leaves a half-written config.json."""
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(self.to_json() + "\n")
        os.replace(tmp, path)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name} {value!r} is not one of {', '.join(allowed)}")


def _positive(name: str, value: float | int) -> None:
    if not value > 0:
        raise ConfigError(f"--{name} must be > 0, got {value}")


def validate(config: Config) -> Config:
    """Checks every field; raises :class:`ConfigError` on the first bad one."""
    c = config
    if not isinstance(c.dataset, str) or not c.dataset:
        raise ConfigError("--dataset must be a TFDS dataset name, e.g. mnist_5k, mnist, binarized_mnist")
    for name in ("train_split", "eval_split"):
        if not isinstance(getattr(c, name), str) or not getattr(c, name).strip():
            raise ConfigError(f"--{name} must be a TFDS split such as train, test or 'train[45000:]'")
    base = c.eval_split.split("[", 1)[0].strip()
    if "[" in c.eval_split and base == c.train_split.strip():
        raise ConfigError(f"--eval_split {c.eval_split!r} is part of --train_split {c.train_split!r}; hold it out, "
                          f"e.g. --train_split '{base}[:45000]' --eval_split '{base}[45000:]'")
    _choice("model", c.model, MODELS)
    _choice("arch", c.arch, ARCHS)
    _choice("activation", c.activation, ACTIVATIONS)
    _choice("likelihood", c.likelihood, LIKELIHOODS)
    _choice("binarize", c.binarize, BINARIZE)
    _choice("lr_schedule", c.lr_schedule, LR_SCHEDULES)
    _choice("parallel", c.parallel, PARALLEL)
    _choice("dtype", c.dtype, DTYPES)
    _choice("input_noise", c.input_noise, INPUT_NOISE)
    for name in ("beta", "free_bits", "code_l2"):
        if not getattr(c, name) >= 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(c, name)}")
    for name in ("kl_warmup_steps", "latent_mixture"):
        if getattr(c, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(c, name)}")
    _positive("num_importance_samples", c.num_importance_samples)
    if c.num_importance_samples > 1 and c.model != "iwae":
        raise ConfigError(f"--num_importance_samples {c.num_importance_samples} needs --model iwae")
    if c.beta != 1.0 and c.model not in ("vae", "beta_vae", "cvae", "hvae"):
        raise ConfigError(f"--beta weights the KL of vae, beta_vae, cvae and hvae; --model {c.model} does not use it")
    if c.input_noise != "none" and not 0 < c.noise_level <= (10.0 if c.input_noise == "gaussian" else 1.0):
        raise ConfigError(f"--noise_level must be in (0, {10 if c.input_noise == 'gaussian' else 1}] "
                          f"with --input_noise {c.input_noise}, got {c.noise_level}")
    if not isinstance(c.hflip, bool):
        raise ConfigError(f"--hflip must be true or false, got {c.hflip!r}")
    if c.input_noise == "none" and c.noise_level:
        raise ConfigError(f"--noise_level {c.noise_level} needs --input_noise flip, gaussian or mask")
    for name in ("latent_dim", "steps", "batch_size", "eval_every", "checkpoint_every",
                 "keep_checkpoints", "steps_per_call", "max_nonfinite"):
        _positive(name, getattr(c, name))
    _positive("learning_rate", c.learning_rate)
    if c.epochs is not None:
        _positive("epochs", c.epochs)
    if c.stochastic_layers not in (1, 2):
        raise ConfigError(f"--stochastic_layers must be 1 or 2, got {c.stochastic_layers}")
    if c.stochastic_layers == 2 and not c.arch.startswith("mlp"):
        raise ConfigError(f"--stochastic_layers 2 is built for --arch mlp, got --arch {c.arch}")
    if c.stochastic_layers == 2 and c.model == "ae":
        raise ConfigError("--stochastic_layers 2 needs a stochastic model (vae, beta_vae, iwae, cvae), not ae")
    _positive("top_latent_dim", c.top_latent_dim)
    for name in ("hidden_dims", "channels", "top_hidden_dims"):
        dims = getattr(c, name)
        if not dims or any(int(d) <= 0 for d in dims):
            raise ConfigError(f"--{name} must be a non-empty list of positive widths, got {list(dims)}")
    if (c.model == "hvae") != (c.arch in HVAE_PRESETS):
        raise ConfigError(f"--model hvae needs an --arch of {', '.join(HVAE_PRESETS)} and those presets need "
                          f"--model hvae; got --model {c.model} --arch {c.arch}")
    if c.model == "hvae" and c.dtype != "float32":
        raise ConfigError(f"--dtype {c.dtype} is implemented for the mlp and conv networks; hvae computes in float32")
    if c.model == "hvae" and c.stochastic_layers != 1:
        raise ConfigError("--model hvae sets its own hierarchy; leave --stochastic_layers at 1")
    if c.skip_threshold < 0:
        raise ConfigError(f"--skip_threshold must be >= 0 (0 disables skipping), got {c.skip_threshold}")
    if not 0 <= c.ema_decay < 1:
        raise ConfigError(f"--ema_decay must be in [0, 1) (0 disables the average), got {c.ema_decay}")
    if c.warmup_steps < 0:
        raise ConfigError(f"--warmup_steps must be >= 0, got {c.warmup_steps}")
    if c.grad_clip < 0:
        raise ConfigError(f"--grad_clip must be >= 0 (0 disables clipping), got {c.grad_clip}")
    if c.gaussian_scale is not None:
        _positive("gaussian_scale", c.gaussian_scale)
    _positive("num_mixtures", c.num_mixtures)
    if c.likelihood in ("gaussian", "logistic_mixture") and c.binarize != "none":
        raise ConfigError(f"--likelihood {c.likelihood} scores 8-bit grey levels; use it with --binarize none")
    limits = {"batch_size": 1 << 16, "latent_dim": 1 << 14, "steps": 1 << 31, "num_mixtures": 1 << 10}
    for name, limit in limits.items():
        if getattr(c, name) > limit:
            raise ConfigError(f"--{name} {getattr(c, name)} is absurdly large (at most {limit})")
    return c


def incompatible_fields(saved: Config, new: Config) -> list[str]:
    """Fields that differ between a saved run and a new request and forbid resuming."""
    return [
        f.name for f in dataclasses.fields(Config)
        if f.name not in RESUMABLE_FIELDS and getattr(saved, f.name) != getattr(new, f.name)
    ]
