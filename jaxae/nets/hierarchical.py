"""The network of the hierarchical VAE (family ``hvae``), in the style of VDVAE (Child 2021) and
NVAE (Vahdat & Kautz 2020).

Structure (``HierarchicalNet``), for stages ``((res, encoder_blocks, groups), ...)`` listed
from the image resolution down to the coarsest one:

- Bottom-up: a 3x3 conv to ``width`` channels, then at each resolution (average-pooled
  down from the previous one) ``encoder_blocks`` bottleneck residual blocks; the
  activation at the end of each resolution is kept for the top-down pass.
- Top-down, coarsest resolution first (nearest-neighbour upsampling between them, plus a
  learned per-resolution bias): ``groups`` latent groups per resolution. Group l holds
  z_l of shape (res, res, zdim):

    prior      p(z_l | z_<l) = N(mu_p, sigma_p)        from a block on the state h
    posterior  q(z_l | x, z_<l) = N(mu_p + dmu, sigma_p * exp(dlog_sigma))
               from a block on [h, bottom-up activation] -- parameterised relative to
               the prior (NVAE), so q starts equal to p and KLs start small
    update     h <- h + prior-block features + conv1x1(z_l);  h <- residual block(h)

  The first (coarsest) group's prior is N(0, I), so a model with a single group is
  exactly a VAE: p(z) = N(0, I), q(z|x) Gaussian, p(x|z) from the decoder.
- Output: a 1x1 conv of act(h) to the likelihood's parameters at full resolution.
- Condition (``conditioned``; a one-hot label (B, K) or a low-resolution image x_low (B, h, w,
  C)): at each resolution r the top-down state also gets a 3x3 conv of the condition there
  (a label broadcast over r x r; x_low resized to r x r, bilinear and antialiased), with its
  kernel zero-initialised, so every prior p(z_l | z_<l, c) with l > 0, the posteriors
  (through h) and p(x | z, c) see it; the top group's prior stays N(0, I) (as a conditional
  VAE's p(z)).

Precision (``dtype``): the convolutions, the residual streams and the bottom-up
activations compute in ``dtype`` (bfloat16 for ``--dtype bfloat16``; None: the params'
own precision); params stay float32, and every latent group's statistics (means,
log-stds), its noise, z, KL and log-ratio, and the output, are float32, so the KL and the
likelihood are computed in full precision.

Rematerialization (``remat``): each bottom-up block and each whole top-down group
(prior, posterior and residual blocks) is wrapped in ``nn.remat`` with no saved
intermediates, so the backward pass keeps only their inputs and recomputes the rest: the
memory of the activations drops to about one residual-stream tensor per block and group,
for one more forward pass of compute. The parameters (and their names) and the numbers
are the same with and without it.

KL terms are closed form per group (both Gaussians are diagonal): the NELBO is
-log p(x|z) + sum_l KL(q(z_l|x, z_<l) || p(z_l|z_<l)) with z_<l drawn from q, which is
VDVAE's objective. ``sample_and_score`` gives log p(z) - log q(z|x) for the IWAE bound.

Inverse autoregressive flow posteriors (``flow_steps`` T > 0; Kingma et al. 2016, whose
ResNet VAE puts an IAF in every latent group): the posterior block also outputs a context
c (2 * zdim channels), and z_l = IAF_T(z0, c) with z0 = q_mean + q_std * eps
(jaxae.nets.iaf: T steps, each a MADE of two ELU hidden layers of ``flow_hidden`` units,
applied at every position to the zdim channels there, autoregressive over the channels).
Exactly log q(z_l) = log N(eps; 0, I) - sum log q_std - sum_t sum log sigma_t, so the
log-ratio stays exact; the KL has no closed form and is the one-sample estimate
log q(z_l) - log p(z_l|z_<l) = -(the group's log-ratio). A group's code (``encode``) is
then the flow's image of q_mean (its z at eps = 0). The prior and generation are unchanged.

Noise layout: one vector eps (B, noise_dim), the groups' standard-normal noise
concatenated coarsest first, each group (res * res * zdim) in (res, res, zdim) order.
Decoding with eps draws ancestral samples from the prior; ``group_sizes`` lets the
caller scale each group's noise (per-group sampling temperature).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae.nets.iaf import IAF
from jaxae.nets.mlp import widen


# Presets (``--arch`` of ``--model hvae``): residual width, block bottleneck width, latent
# channels per group, and stages (resolution, encoder blocks, latent groups) from the image
# resolution down. hvae_mnist is for 28x28 images, the cifar presets for 32x32
# (hvae_cifar_small is sized for a CPU; hvae_cifar for a GPU).
# hvae_64 follows VDVAE's ImageNet-64 model (encoder 64x11, 32x20, 16x9, 8x8, 4x7, 1x5
# blocks; decoder 1x2, 4x3, 8x7, 16x15, 32x31, 64x12 groups; width 512, bottleneck 128,
# 16 latent channels) at about a quarter of its depth and half its width. hvae_256 follows
# VDVAE's FFHQ-256 model (the same pattern with 128x128 and 256x256 stages: most groups
# at 16-64, few at the two finest) much narrower, width 128 / bottleneck 32 / 8 latent
# channels, so that its train step at batch 8 plans within 16 GiB (with --remat; the
# README's table, from benchmarks/memory.py).
PRESETS = {
    "hvae_mnist": {"width": 64, "bottleneck": 16, "zdim": 8,
                   "stages": ((28, 1, 1), (14, 2, 3), (7, 2, 3), (1, 2, 2))},
    "hvae_cifar_small": {"width": 64, "bottleneck": 16, "zdim": 8,
                         "stages": ((32, 2, 1), (16, 2, 2), (8, 2, 3), (4, 2, 3), (1, 2, 2))},
    "hvae_cifar": {"width": 256, "bottleneck": 64, "zdim": 16,
                   "stages": ((32, 4, 4), (16, 6, 6), (8, 6, 6), (4, 4, 4), (1, 2, 2))},
    "hvae_64": {"width": 256, "bottleneck": 64, "zdim": 16,
                "stages": ((64, 3, 3), (32, 5, 8), (16, 3, 4), (8, 2, 2), (4, 2, 2), (1, 2, 2))},
    "hvae_256": {"width": 128, "bottleneck": 32, "zdim": 8,
                 "stages": ((256, 2, 1), (128, 2, 2), (64, 3, 4), (32, 4, 6), (16, 3, 4), (8, 2, 2), (4, 2, 2),
                            (1, 2, 2))},
}

@dataclasses.dataclass(frozen=True)
class HVAEArch:
    """Sizes of a hierarchical VAE.

    width: channels of the residual stream; bottleneck: channels inside each block;
    zdim: latent channels per group; stages: ((resolution, encoder_blocks, groups), ...)
    from the image resolution down (each resolution divides the previous one).
    """

    width: int
    bottleneck: int
    zdim: int
    stages: tuple[tuple[int, int, int], ...]

    @property
    def num_groups(self) -> int:
        return sum(groups for _, _, groups in self.stages)

    def group_resolutions(self) -> list[int]:
        """Resolution of each latent group, in top-down order (coarsest first)."""
        return [res for res, _, groups in reversed(self.stages) for _ in range(groups)]

    def group_sizes(self) -> list[int]:
        return [res * res * self.zdim for res in self.group_resolutions()]

    @property
    def noise_dim(self) -> int:
        return sum(self.group_sizes())

    @property
    def top_dim(self) -> int:
        return self.group_sizes()[0]

    def check(self, image_shape: tuple[int, int, int]) -> None:
        """ValueError naming the problem when the stages do not fit ``image_shape``."""
        height, width = image_shape[:2]
        if height != width:
            raise ValueError(f"hierarchical presets need square images, got {height}x{width}")
        resolutions = [res for res, _, _ in self.stages]
        if resolutions[0] != height:
            raise ValueError(f"the preset's first stage is {resolutions[0]}x{resolutions[0]}, "
                             f"but the images are {height}x{width}")
        for hi, lo in zip(resolutions, resolutions[1:]):
            if lo >= hi or hi % lo:
                raise ValueError(f"stage resolutions must shrink by integer factors, got {hi} -> {lo}")
        if self.stages[-1][2] < 1:
            raise ValueError("the coarsest stage needs at least one latent group")


def _gelu(x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=True)


class Block(nn.Module):
    """VDVAE's bottleneck block: 1x1 -> 3x3 -> 3x3 -> 1x1 convs on gelu'd inputs (3x3 become
    1x1 at resolutions <= 2), plus the input when ``residual``. The last conv's init is
    scaled by ``out_scale`` (1/sqrt(depth) keeps the residual stream's variance bounded;
    0: zeros, so the block starts as the zero function). (B, r, r, C) -> (B, r, r, out),
    computed and returned in ``dtype`` (None: the inputs' and params' precision)."""

    bottleneck: int
    out: int
    residual: bool = True
    out_scale: float = 1.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = (3, 3) if x.shape[1] > 2 else (1, 1)
        h = nn.Conv(self.bottleneck, (1, 1), dtype=self.dtype)(_gelu(x))
        h = nn.Conv(self.bottleneck, k, dtype=self.dtype)(_gelu(h))
        h = nn.Conv(self.bottleneck, k, dtype=self.dtype)(_gelu(h))
        init = (nn.initializers.variance_scaling(self.out_scale ** 2, "fan_in", "truncated_normal") if self.out_scale
                else nn.initializers.zeros)
        h = nn.Conv(self.out, (1, 1), kernel_init=init, dtype=self.dtype)(_gelu(h))
        return x + h if self.residual else h


def _pool(h: jax.Array, res: int) -> jax.Array:
    factor = h.shape[1] // res
    return h if factor == 1 else nn.avg_pool(h, (factor, factor), (factor, factor))


def _upsample(h: jax.Array, res: int) -> jax.Array:
    factor = res // h.shape[1]
    return h if factor == 1 else jnp.repeat(jnp.repeat(h, factor, axis=1), factor, axis=2)


class TopDownGroup(nn.Module):
    """One latent group of the top-down pass (see the module docstring).

    ``__call__(h, enc, eps)``: h (B, r, r, width) the top-down state (in ``dtype``); enc
    the bottom-up activation at this resolution (None: generate from the prior); eps
    (B, r, r, zdim) float32. Returns (new h, KL per example (B,), log p(z) - log q(z) per
    example (B,), z, and the posterior's (location, logstd)); when generating the KL and
    log-ratio are 0 and the prior's (mean, logstd) is returned instead. The location is
    q's mean, or with ``flow_steps`` its image under the flow (the KL is then the
    one-sample estimate, see the module docstring). The blocks compute in ``dtype``; the
    statistics, the flow, z, KL and log-ratio are float32 (or float64 with float64 params
    and ``dtype`` None).
    """

    arch: HVAEArch
    standard_prior: bool
    out_scale: float
    dtype: Any = None
    flow_steps: int = 0
    flow_hidden: int = 128

    @nn.compact
    def __call__(self, h: jax.Array, enc: jax.Array | None, eps: jax.Array):
        zdim, width = self.arch.zdim, self.arch.width
        stats = jnp.promote_types(h.dtype, jnp.float32)   # At least float32.
        if self.standard_prior:
            p_mean = p_logstd = jnp.zeros((*h.shape[:3], zdim), stats)
            features = 0.0
        else:
            # Zero-initialised: every prior starts as N(0, I) and adds nothing to h (as in VDVAE).
            prior_out = Block(self.arch.bottleneck, 2 * zdim + width, residual=False, out_scale=0.0,
                              dtype=self.dtype, name="prior")(h)
            p_mean, p_logstd, features = jnp.split(prior_out, [zdim, 2 * zdim], axis=-1)
            p_mean, p_logstd = p_mean.astype(stats), p_logstd.astype(stats)
        if enc is None:  # Generation: the posterior block is not needed.
            z = p_mean + jnp.exp(p_logstd) * eps
            kl = log_ratio = jnp.zeros(h.shape[0])
            posterior = (p_mean, p_logstd)
        else:
            context = 2 * zdim if self.flow_steps else 0
            q_out = Block(self.arch.bottleneck, 2 * zdim + context, residual=False, dtype=self.dtype,
                          name="posterior")(jnp.concatenate([h, enc], axis=-1))
            d_mean, d_logstd, c = jnp.split(q_out.astype(stats), [zdim, 2 * zdim], axis=-1)
            q_mean, q_logstd = p_mean + d_mean, p_logstd + d_logstd
            z = q_mean + jnp.exp(q_logstd) * eps
            axes = (1, 2, 3)
            location, log_det = q_mean, 0.0
            if self.flow_steps:
                flow = IAF(zdim, self.flow_steps, (self.flow_hidden, self.flow_hidden), name="flow")
                z, log_det = flow(z, c)
                location = flow(q_mean, c)[0]
                log_det = jnp.sum(log_det, axis=(1, 2))
            # log p(z) - log q(z); with z0 = q_mean + q_std * eps the quadratic term of q is eps^2 / 2,
            # and the flow divides q by its Jacobian determinant.
            log_ratio = jnp.sum(q_logstd - p_logstd + 0.5 * jnp.square(eps)
                                - 0.5 * jnp.square((z - p_mean) * jnp.exp(-p_logstd)), axis=axes) + log_det
            kl = -log_ratio if self.flow_steps else jnp.sum(
                dist.gaussian_kl(q_mean, 2.0 * q_logstd, p_mean, 2.0 * p_logstd), axis=axes)
            posterior = (location, q_logstd)
        z_init = nn.initializers.variance_scaling(self.out_scale ** 2, "fan_in", "truncated_normal")
        h = h + features + nn.Conv(width, (1, 1), kernel_init=z_init, dtype=self.dtype, name="z_proj")(z)
        h = Block(self.arch.bottleneck, width, residual=True, out_scale=self.out_scale, dtype=self.dtype,
                  name="res")(h)
        return h, kl, log_ratio, z, posterior


class HierarchicalNet(nn.Module):
    """The hierarchical VAE network with the interface every jaxae network has (jaxae.nets.stochastic):

    - ``__call__(x, eps, cond)`` -> (decoder output (B, H, W, K), KL per group (B, G), code);
    - ``sample_and_score(x, eps (B, S, N), cond)`` -> (outputs (B, S, H, W, K), log p(z) - log q(z|x) (B, S));
    - ``encode(x, cond)`` -> the top group's posterior (location, logvar), each (B, top_dim);
    - ``decode(v, cond)``: v (B, noise_dim) is prior noise for every group (ancestral
      sample); v (B, top_dim) is the top group's z, lower groups then take their prior means.

    x: (B, H, W, C) float in [0, 1]; ``cond``: with ``conditioned``, the condition (a one-hot
    label (B, K) or x_low (B, h, w, C), see the module docstring), else None. dtype: compute
    dtype of the convolutions and residual streams (None: the params' precision); outputs,
    KLs and log-ratios are float32. remat: recompute each block's and group's activations in
    the backward pass; flow_steps, flow_hidden: an inverse autoregressive flow in every
    group's posterior (0: none; see the module docstring).
    """

    arch: HVAEArch
    out_channels: int
    dtype: Any = None
    remat: bool = False
    flow_steps: int = 0
    flow_hidden: int = 128
    conditioned: bool = False

    def setup(self):
        arch, dtype = self.arch, self.dtype
        block = nn.remat(Block) if self.remat else Block
        group = nn.remat(TopDownGroup) if self.remat else TopDownGroup
        depth = sum(blocks for _, blocks, _ in arch.stages)
        self.stem = nn.Conv(arch.width, (3, 3), dtype=dtype)
        self.encoder_blocks = [[block(arch.bottleneck, arch.width, out_scale=1 / math.sqrt(depth), dtype=dtype)
                                for _ in range(blocks)] for _, blocks, _ in arch.stages]
        scale = 1 / math.sqrt(arch.num_groups)
        self.groups = [group(arch, standard_prior=i == 0, out_scale=scale, dtype=dtype, flow_steps=self.flow_steps,
                             flow_hidden=self.flow_hidden) for i in range(arch.num_groups)]
        self.biases = [self.param(f"bias_{res}", nn.initializers.zeros, (1, res, res, arch.width))
                       for res, _, _ in arch.stages]
        self.output = nn.Conv(self.out_channels, (1, 1), dtype=dtype)
        if self.conditioned:
            self.cond_projs = [nn.Conv(arch.width, (3, 3), kernel_init=nn.initializers.zeros, dtype=dtype,
                                       name=f"cond_{res}") for res, _, _ in arch.stages]

    def condition_features(self, cond: jax.Array | None, res: int, stage: int) -> jax.Array | float:
        """What the condition adds to the top-down state at resolution ``res``: (B, res, res,
        width), or 0.0 for an unconditioned net."""
        if not self.conditioned:
            return 0.0
        if cond is None:
            raise ValueError("this hierarchical net is conditioned: pass its condition")
        cond = cond.astype(jnp.float32)
        if cond.ndim == 2:   # A label: the same vector at every position.
            c = jnp.broadcast_to(cond[:, None, None, :], (cond.shape[0], res, res, cond.shape[1]))
        else:
            c = jax.image.resize(cond, (cond.shape[0], res, res, cond.shape[3]), "linear")
        return self.cond_projs[stage](c)

    def bottom_up(self, x: jax.Array) -> dict[int, jax.Array]:
        h = self.stem(2.0 * x - 1.0)
        acts = {}
        for (res, _, _), blocks in zip(self.arch.stages, self.encoder_blocks):
            h = _pool(h, res)
            for block in blocks:
                h = block(h)
            acts[res] = h
        return acts

    def top_down(self, eps: jax.Array, acts: dict[int, jax.Array] | None, num_groups: int | None = None,
                 cond: jax.Array | None = None):
        """eps (B, noise_dim); acts from bottom_up (None: from the prior); cond the condition
        (B, ...) of a conditioned net. Returns the final state h, KL per group (B, G),
        log-ratio (B,) and each group's posterior (mean, logstd)."""
        arch, batch = self.arch, eps.shape[0]
        sizes, resolutions = arch.group_sizes(), arch.group_resolutions()
        offsets = [0, *itertools.accumulate(sizes)]
        stage_of = {res: i for i, (res, _, _) in enumerate(arch.stages)}
        h, kls, log_ratio, posteriors = None, [], jnp.zeros(batch), []
        for g, (group, res) in enumerate(zip(self.groups, resolutions)):
            if num_groups is not None and g == num_groups:
                break
            bias = self.biases[stage_of[res]]
            bias = bias if self.dtype is None else bias.astype(self.dtype)
            if h is None:
                h = jnp.broadcast_to(bias, (batch, *bias.shape[1:])) + self.condition_features(cond, res, stage_of[res])
            elif h.shape[1] != res:
                h = _upsample(h, res) + bias + self.condition_features(cond, res, stage_of[res])
            e = eps[:, offsets[g]:offsets[g + 1]].reshape(batch, res, res, arch.zdim)
            h, kl, ratio, _, posterior = group(h, None if acts is None else acts[res], e)
            kls.append(kl)
            log_ratio = log_ratio + ratio
            posteriors.append(posterior)
        if h.shape[1] != arch.stages[0][0]:
            h = _upsample(h, arch.stages[0][0])
        return h, jnp.stack(kls, axis=-1), log_ratio, posteriors

    def _output(self, h: jax.Array) -> jax.Array:
        return widen(self.output(_gelu(h)), self.dtype)

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        h, kl, _, posteriors = self.top_down(eps, self.bottom_up(x), cond=cond)
        top_mean = posteriors[0][0].reshape(x.shape[0], -1)
        return self._output(h), kl, top_mean

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        batch, samples = eps.shape[:2]
        acts = {res: jnp.repeat(a, samples, axis=0) for res, a in self.bottom_up(x).items()}
        cond = None if cond is None else jnp.repeat(cond, samples, axis=0)
        h, _, log_ratio, _ = self.top_down(eps.reshape(batch * samples, -1), acts, cond=cond)
        out = self._output(h)
        return out.reshape(batch, samples, *out.shape[1:]), log_ratio.reshape(batch, samples)

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        eps = jnp.zeros((x.shape[0], self.arch.top_dim))
        _, _, _, posteriors = self.top_down(eps, self.bottom_up(x), num_groups=1, cond=cond)
        mean, logstd = posteriors[0]
        return mean.reshape(x.shape[0], -1), 2.0 * logstd.reshape(x.shape[0], -1)

    def decode(self, v: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        if v.shape[-1] == self.arch.top_dim and self.arch.num_groups > 1:
            # The top group's prior is N(0, I): its noise is its z. Lower groups: prior means.
            v = jnp.concatenate([v, jnp.zeros((v.shape[0], self.arch.noise_dim - v.shape[-1]), v.dtype)], -1)
        h, _, _, _ = self.top_down(v, None, cond=cond)
        return self._output(h)


def group_temperatures(arch: HVAEArch, temperatures: Sequence[float]) -> jax.Array:
    """Per-group temperatures (one value, or one per group) -> a (noise_dim,) noise scale."""
    if len(temperatures) not in (1, arch.num_groups):
        raise ValueError(f"give one temperature or one per latent group ({arch.num_groups}), "
                         f"got {len(temperatures)}")
    values = list(temperatures) * (arch.num_groups if len(temperatures) == 1 else 1)
    return jnp.concatenate([jnp.full((size,), t, jnp.float32) for size, t in zip(arch.group_sizes(), values)])


__all__ = ["Block", "HVAEArch", "HierarchicalNet", "TopDownGroup", "group_temperatures"]
