"""Validating a Config up front: one ConfigError naming the first bad value and what is allowed."""

from __future__ import annotations

from jaxae.config.schema import FIELD_TYPES, FIELDS, FLAGS, RESUMABLE, Config
from jaxae.config.sections import DEFAULT_LOWRES_FACTOR, burda_epochs
from jaxae.errors import ConfigError

MAX_CODEBOOK = 1 << 16  # --codebook_size: the prior's logits have one channel per entry.
MAX_IMAGE_SIZE = 4096  # --image_size: larger sides are surely a typo (a 4096^2 RGB image is 48 MiB as uint8).


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name} {value!r} is not one of {', '.join(allowed)}")


def _positive(name: str, value: float | int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"--{name} must be > 0, got {value!r}")


def _check_types(config: Config) -> None:
    kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
             "str | None": (str, type(None)), "int | None": (int, type(None)),
             "float | None": (int, float, type(None)), "tuple[int, ...]": (tuple,)}
    for flag, value in config.flat().items():
        kind = FIELD_TYPES[flag]
        ok = isinstance(value, kinds[kind]) and not (isinstance(value, bool) and kind != "bool")
        if kind == "tuple[int, ...]" and ok:
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise ConfigError(f"--{flag} must be of type {kind}, got {value!r}")


def validate(config: Config) -> Config:
    """Checks every field; raises :class:`ConfigError` on the first bad one. The checks that
    depend on the family (which objective settings it uses) are the family's own
    (``jaxae.families.check_config``)."""
    _check_types(config)
    d, m, o, opt, r = config.data, config.model, config.objective, config.optimizer, config.run
    if not d.dataset:
        raise ConfigError("--dataset must be a TFDS dataset name, e.g. mnist_5k, mnist, binarized_mnist")
    for name in ("train_split", "eval_split"):
        if not getattr(d, name).strip():
            raise ConfigError(f"--{name} must be a TFDS split such as train, test or 'train[45000:]'")
    base = d.eval_split.split("[", 1)[0].strip()
    if "[" in d.eval_split and base == d.train_split.strip():
        raise ConfigError(f"--eval_split {d.eval_split!r} is part of --train_split {d.train_split!r}; hold it out, "
                          f"e.g. --train_split '{base}[:45000]' --eval_split '{base}[45000:]'")
    for flag, field in FIELDS.items():
        if field.metadata["choices"]:
            _choice(flag, config.flat()[flag], field.metadata["choices"])
    if not m.family:
        raise ConfigError("--model must name a model family")
    for name in ("beta", "free_bits", "code_l2", "mmd_weight", "decoder_reg", "commitment", "tc_weight"):
        if not getattr(o, name) >= 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(o, name)}")
    for name, value in (("kl_warmup_steps", o.kl_warmup_steps), ("latent_mixture", m.latent_mixture),
                        ("warmup_steps", opt.warmup_steps)):
        if value < 0:
            raise ConfigError(f"--{name} must be >= 0, got {value}")
    _positive("num_importance_samples", o.num_importance_samples)
    _positive("resident_limit_mib", d.resident_limit_mib)
    if d.input == "streaming" and r.parallel == "pmap":
        raise ConfigError("--input streaming feeds a device mesh; use --parallel sharded (the default)")
    if d.image_size is not None and not 1 <= d.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"--image_size must be in 1..{MAX_IMAGE_SIZE} (or none: keep the native size), "
                          f"got {d.image_size}")
    _positive("miwae_m", o.miwae_m)
    _positive("vamp_components", o.vamp_components)
    _positive("iaf_hidden", o.iaf_hidden)
    _positive("stage2_hidden", o.stage2_hidden)
    if o.stage1_steps < 0:
        raise ConfigError(f"--stage1_steps must be >= 0 (0: half of --steps), got {o.stage1_steps}")
    for name in ("iaf_steps", "group_iaf_steps"):
        if getattr(o, name) < 0:
            raise ConfigError(f"--{name} must be >= 0 (0: no flow), got {getattr(o, name)}")
    _positive("draw_steps", o.draw_steps)
    _positive("draw_lstm", o.draw_lstm)
    for name in ("draw_read_size", "draw_write_size"):
        if getattr(o, name) < 2:
            raise ConfigError(f"--{name} must be >= 2 (an N x N grid of filters), got {getattr(o, name)}")
    if not 2 <= o.codebook_size <= MAX_CODEBOOK:
        raise ConfigError(f"--codebook_size must be in 2..{MAX_CODEBOOK}, got {o.codebook_size}")
    _positive("pixelcnn_layers", o.pixelcnn_layers)
    if not 0.0 <= o.codebook_ema < 1.0:
        raise ConfigError(f"--codebook_ema must be in [0, 1) (0: off), got {o.codebook_ema}")
    _positive("pixelcnn_channels", o.pixelcnn_channels)
    if not 0.0 <= o.ciwae_beta <= 1.0:
        raise ConfigError(f"--ciwae_beta must be in [0, 1], got {o.ciwae_beta}")
    if d.input_noise != "none" and not 0 < d.noise_level <= (10.0 if d.input_noise == "gaussian" else 1.0):
        raise ConfigError(f"--noise_level must be in (0, {10 if d.input_noise == 'gaussian' else 1}] "
                          f"with --input_noise {d.input_noise}, got {d.noise_level}")
    if d.input_noise == "none" and d.noise_level:
        raise ConfigError(f"--noise_level {d.noise_level} needs --input_noise flip, gaussian or mask")
    for name, value in (("latent_dim", m.latent_dim), ("top_latent_dim", m.top_latent_dim),
                        ("num_mixtures", m.num_mixtures), ("learning_rate", opt.learning_rate),
                        ("adam_eps", opt.adam_eps), ("steps", r.steps), ("batch_size", r.batch_size),
                        ("eval_every", r.eval_every), ("checkpoint_every", r.checkpoint_every),
                        ("keep_checkpoints", r.keep_checkpoints), ("max_nonfinite", r.max_nonfinite),
                        ("grad_accum", r.grad_accum)):
        _positive(name, value)
    if r.batch_size % r.grad_accum:
        raise ConfigError(f"--batch_size {r.batch_size} must be divisible by --grad_accum {r.grad_accum}")
    if r.max_skipped < 0:
        raise ConfigError(f"--max_skipped must be >= 0 (0: off), got {r.max_skipped}")
    for name in ("epochs", "steps_per_call"):
        if getattr(r, name) is not None:
            _positive(name, getattr(r, name))
    if m.gaussian_scale is not None:
        _positive("gaussian_scale", m.gaussian_scale)
    if m.conditional and m.condition == "lowres":
        raise ConfigError("--conditional conditions on the class label; it cannot be combined with --condition "
                          "lowres (use one of them)")
    if m.lowres_factor < 2:
        raise ConfigError(f"--lowres_factor must be >= 2, got {m.lowres_factor}")
    if m.condition_kind != "lowres" and m.lowres_factor != DEFAULT_LOWRES_FACTOR:
        raise ConfigError(f"--lowres_factor {m.lowres_factor} is used by --condition lowres only")
    if m.stochastic_layers not in (1, 2):
        raise ConfigError(f"--stochastic_layers must be 1 or 2, got {m.stochastic_layers}")
    if m.stochastic_layers == 2 and not m.arch.startswith("mlp"):
        raise ConfigError(f"--stochastic_layers 2 is built for --arch mlp, got --arch {m.arch}")
    for name in ("hidden_dims", "channels", "top_hidden_dims"):
        dims = getattr(m, name)
        if not dims or any(v <= 0 for v in dims):
            raise ConfigError(f"--{name} must be a non-empty list of positive widths, got {list(dims)}")
    if opt.skip_threshold < 0:
        raise ConfigError(f"--skip_threshold must be >= 0 (0 disables skipping), got {opt.skip_threshold}")
    if not 0 <= opt.ema_decay < 1:
        raise ConfigError(f"--ema_decay must be in [0, 1) (0 disables the average), got {opt.ema_decay}")
    if opt.grad_clip < 0:
        raise ConfigError(f"--grad_clip must be >= 0 (0 disables clipping), got {opt.grad_clip}")
    if opt.lr_schedule == "burda" and r.epochs not in (None, burda_epochs()):
        raise ConfigError(f"--lr_schedule burda runs {burda_epochs()} epochs; leave --epochs unset, got {r.epochs}")
    if opt.lr_schedule == "burda" and opt.warmup_steps:
        raise ConfigError(f"--lr_schedule burda has no warm-up; leave --warmup_steps at 0, got {opt.warmup_steps}")
    if m.likelihood in ("gaussian", "logistic_mixture") and d.binarize != "none":
        raise ConfigError(f"--likelihood {m.likelihood} scores 8-bit grey levels; use it with --binarize none")
    limits = {"batch_size": r.batch_size, "latent_dim": m.latent_dim, "steps": r.steps,
              "num_mixtures": m.num_mixtures}
    maxima = {"batch_size": 1 << 16, "latent_dim": 1 << 14, "steps": 1 << 31, "num_mixtures": 1 << 10}
    for name, limit in maxima.items():
        if limits[name] > limit:
            raise ConfigError(f"--{name} {limits[name]} is absurdly large (at most {limit})")
    return config


def total_steps(config: Config, num_train: int) -> int:
    """Training steps of a run on ``num_train`` training images."""
    epochs = burda_epochs() if config.optimizer.lr_schedule == "burda" else config.run.epochs
    return epochs * (num_train // config.run.batch_size) if epochs else config.run.steps


def incompatible_fields(saved: Config, new: Config) -> list[str]:
    """Flag names whose values differ between a saved run and a new request and forbid resuming."""
    old, ask = saved.flat(), new.flat()
    return [name for name in FLAGS if name not in RESUMABLE and old[name] != ask[name]]
