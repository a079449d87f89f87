"""The VQ-VAE (van den Oord et al. 2017, "Neural discrete representation learning"), ``vqvae``,
with a gated PixelCNN prior over its code grid.

The convolutional encoder (``--arch conv`` or ``resnet``, S = len(channels) stride-2 stages)
maps an image to a grid z_e (h, w, D), h = H / 2^S (7 x 7 for 28 x 28 with two stages, 8 x 8
for 32 x 32 with two), D = ``--latent_dim``. Each z_e vector is replaced by its nearest
entry e of a learned codebook of K = ``codebook_size`` vectors (Euclidean distance, ties
to the lower index), the decoder reads z_q = z_e + stop_gradient(e - z_e) (the value e, the
straight-through gradient of the decoder's input passed to z_e), and per image

    loss = -log p(x | z_q) + ||sg[z_e] - e||^2 + commitment ||z_e - sg[e]||^2 + prior_nll,

squared norms summed over the grid and D (the paper's terms per image, as -log p(x|z) is
summed over pixels). The codebook (initialised uniform on [-1/K, 1/K]) is learned by the
loss (its second term), or with ``--codebook_ema`` gamma > 0 by the paper's exponential
moving averages (its appendix A.1) instead, and the loss drops that term: after each step
(``update_state``, on the assignments of the step's own forward pass, summed over the whole
global batch) every entry i with n_i assigned encoder outputs summing to s_i becomes

    N_i <- gamma N_i + (1 - gamma) n_i,    e_i <- (gamma N_i e_i + (1 - gamma) s_i) / N_i(new),

the paper's m_i / N_i with m_i = N_i e_i kept implicit (param ``codebook_count`` = N,
initialised to 1): an entry no output picks keeps its vector exactly.
prior_nll = -sum_i log p(k_i | k_<i) is the PixelCNN prior's negative log-likelihood of the
code indices k (jaxae.nets.pixelcnn), trained jointly: its input is the integer indices,
so no gradient reaches the encoder or the codebook from it, and
its parameters get gradients from this term only (Adam scales each parameter's step by
itself, so the joint sum trains the prior as a second phase on moving codes would, while
keeping one pure train step). Logged: the terms, codebook ``perplexity`` exp(H(mean code
usage in the batch)) and ``codes_used`` (entries used in the batch; the rest are dead).

The posterior is one-hot (q(k|x) = 1 at the nearest codes), so KL(q || p) = -log p(k(x))
and recon + prior_nll is the negative ELBO of the model p(k) p(x|k): an upper bound on
-log p(x) of that model. ``eval_terms`` reports it as ``nelbo`` (``kl`` the prior's part),
and the two parts in bits: ``recon_bpd``, ``prior_bpd`` per image dimension and
``prior_bits_per_code`` (a uniform prior would be log2 K). The IWAE bound of a one-hot
posterior is the NELBO itself, so ``bound`` is False and evaluation skips it.

``encode`` returns the quantized grid flattened, (B, h w D); ``prior_draws`` samples code
grids from the PixelCNN position by position (``--temperature`` divides its logits) and
returns their codebook vectors flattened, which ``decode`` decodes.

Conditioned (``--conditional`` or ``--condition lowres``), encoder and decoder see c as
channels (x_low resized to each grid, a label broadcast; jaxae.nets.conv.GridEncoder and
GridDecoder); the PixelCNN prior over the codes stays unconditional, as every family's
prior is independent of c, so the codes carry what x_low does not and samples decode the
prior's codes under the condition given.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import evaluation, nets
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families.base import LatentModel, Params, by_module, conditioning_of, likelihood_of
from jaxae.nets.pixelcnn import PixelCNN, sample_codes


def quantize(z_e: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest codebook entries: z_e (..., D), codebook (K, D) -> (indices int32 (...), the
    entries (..., D)); distance ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2, ties to the lower index."""
    distances = (jnp.sum(jnp.square(z_e), -1, keepdims=True) - 2.0 * z_e @ codebook.T
                 + jnp.sum(jnp.square(codebook), -1))
    indices = jnp.argmin(distances, axis=-1).astype(jnp.int32)
    return indices, codebook[indices]


def straight_through(z_e: jax.Array, e: jax.Array) -> jax.Array:
    """z_q with the value e and the gradient of z_e: z_e + stop_gradient(e - z_e)."""
    return z_e + jax.lax.stop_gradient(e - z_e)


def uniform_codebook(rng: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """The codebook's initialisation (K, D): uniform on [-1/K, 1/K], small next to the encoder's
    outputs, so that at first each z_e picks the entry best aligned with it (nearly every
    entry is used) rather than all picking the one nearest the origin."""
    return jax.random.uniform(rng, shape, dtype, -1.0 / shape[0], 1.0 / shape[0])


def ema_codebook(codebook: jax.Array, count: jax.Array, assigned: jax.Array, sums: jax.Array, decay: float
                 ) -> tuple[jax.Array, jax.Array]:
    """One EMA update of a codebook (K, D) with counts N (K,) from a batch's assignment counts
    n (K,) and sums s (K, D) of the encoder outputs assigned to each entry: (e', N') with
    N' = decay N + (1 - decay) n and e' = (decay N e + (1 - decay) s) / N' (e where N' = 0)."""
    new_count = decay * count + (1.0 - decay) * assigned
    divisor = jnp.where(new_count > 0, new_count, 1.0)[:, None]
    moved = (decay * count[:, None] * codebook + (1.0 - decay) * sums) / divisor
    return jnp.where(new_count[:, None] > 0, moved, codebook), new_count


class VQNet(nn.Module):
    """Encoder to a grid, codebook (param ``codebook`` (K, D)), decoder and PixelCNN prior; with
    ``ema`` also the codebook's EMA counts (param ``codebook_count`` (K,), initialised to 1)."""

    encoder: nn.Module
    decoder: nn.Module
    prior: nn.Module
    num_codes: int
    code_dim: int
    ema: bool = False

    def setup(self):
        self.codebook = self.param("codebook", uniform_codebook, (self.num_codes, self.code_dim))
        if self.ema:
            self.codebook_count = self.param("codebook_count", nn.initializers.ones, (self.num_codes,))

    def assign(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """x (B, H, W, C) and the condition or None -> the encoder's grid z_e (B, h, w, D) and its
        nearest entries' indices (B, h, w)."""
        z_e = self.encoder(x, cond)
        return z_e, quantize(z_e, self.codebook)[0]

    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> dict[str, jax.Array]:
        """x (B, H, W, C) and the condition or None -> decoder output, z_e and e (B, h, w, D),
        indices (B, h, w) and the prior's logits (B, h, w, K) of the indices."""
        z_e, indices = self.assign(x, cond)
        e = self.codebook[indices]
        return {"out": self.decoder(straight_through(z_e, e), cond), "z_e": z_e, "e": e, "indices": indices,
                "logits": self.prior(jax.nn.one_hot(indices, self.num_codes))}

    def quantized(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        """x (B, H, W, C) -> the nearest codebook vectors (B, h, w, D)."""
        return self.codebook[self.assign(x, cond)[1]]

    def decode(self, z_q: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        return self.decoder(z_q, cond)

    def prior_logits(self, one_hot: jax.Array) -> jax.Array:
        return self.prior(one_hot)

    def draw(self, rng: jax.Array, num: int, grid: tuple[int, int], temperature: float | jax.Array = 1.0
             ) -> tuple[jax.Array, jax.Array]:
        """num code grids from the prior (``sample_codes``): (indices (num, h, w), vectors (num, h, w, D))."""
        codes = sample_codes(self.prior, rng, num, grid, self.num_codes, temperature)
        return codes, self.codebook[codes]


@dataclasses.dataclass(frozen=True)
class VQVAE(LatentModel):
    grid: tuple[int, int] = (1, 1)
    codebook_size: int = 128
    commitment: float = 0.25
    pixelcnn_layers: int = 6
    pixelcnn_channels: int = 64
    codebook_ema: float = 0.0

    name = "vqvae"
    settings = ("codebook_size", "commitment", "pixelcnn_layers", "pixelcnn_channels", "codebook_ema")
    deterministic = True

    @classmethod
    def check(cls, config: Config) -> None:
        super().check(config)
        if config.model.arch not in ("conv", "resnet"):
            raise ConfigError(f"--model vqvae encodes to a grid of codes: use --arch conv or resnet, got --arch "
                              f"{config.model.arch}")
        if config.model.stochastic_layers != 1:
            raise ConfigError("--model vqvae has one grid of codes; leave --stochastic_layers at 1")

    @classmethod
    def build(cls, config: Config, spec: InputSpec) -> "VQVAE":
        likelihood = likelihood_of(config)
        m, o = config.model, config.objective
        encoder, decoder = nets.encoder_decoder(m.arch, spec.image_shape,
                                                likelihood.output_channels(spec.image_shape[2]), m.latent_dim,
                                                channels=m.channels, activation=m.activation, dtype=config.run.dtype,
                                                grid=True)
        stride = 2 ** len(m.channels)
        grid = (spec.image_shape[0] // stride, spec.image_shape[1] // stride)
        prior = PixelCNN(o.codebook_size, o.pixelcnn_channels, o.pixelcnn_layers,
                         dtype=nets.compute_dtype(config.run.dtype))
        net = VQNet(encoder=encoder, decoder=decoder, prior=prior, num_codes=o.codebook_size, code_dim=m.latent_dim,
                    ema=o.codebook_ema > 0)
        return cls(net=net, likelihood=likelihood, spec=spec, latent_dim=grid[0] * grid[1] * m.latent_dim,
                   noise_dim=0, conditioning=conditioning_of(config, spec), convolutional=True, grid=grid,
                   **cls.options(config))

    @property
    def bound(self) -> bool:
        """No importance-sampled bound: with a one-hot posterior it equals the NELBO of ``eval_terms``."""
        return False

    @property
    def has_prior(self) -> bool:
        return True

    @property
    def num_codes_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    def init(self, rng: jax.Array) -> Params:
        cond = self.condition(self.conditioning.placeholder(1))
        return self.net.init(rng, jnp.zeros((1, *self.spec.image_shape), jnp.float32), cond)["params"]

    def forward(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Per example (B,) nats: ``recon`` = -log p(x|z_q), ``codebook`` = ||sg[z_e] - e||^2,
        ``commit`` = ||z_e - sg[e]||^2 (the same value, other gradients) and ``prior_nll`` =
        -log p(k) of the code indices; and ``indices`` (B, h, w)."""
        del keys
        net = self.net.apply({"params": params}, batch["x_in"], self.batch_condition(batch))
        z_e, e = net["z_e"], net["e"]
        log_probs = jax.nn.log_softmax(net["logits"], axis=-1)
        log_prior = jnp.take_along_axis(log_probs, net["indices"][..., None], axis=-1)
        squared = lambda a: jnp.sum(jnp.square(a), axis=(1, 2, 3))  # noqa: E731
        return {"recon": -self.likelihood.log_prob(net["out"], batch["x"]),
                "codebook": squared(jax.lax.stop_gradient(z_e) - e), "commit": squared(z_e - jax.lax.stop_gradient(e)),
                "prior_nll": -jnp.sum(log_prior, axis=(1, 2, 3)), "indices": net["indices"]}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        t = self.forward(params, batch, keys)
        codebook_term = 0.0 if self.codebook_ema else t["codebook"]     # With EMA, update_state moves the codebook.
        loss = jnp.mean(t["recon"] + codebook_term + self.commitment * t["commit"] + t["prior_nll"])
        usage = jnp.mean(jax.nn.one_hot(t["indices"], self.codebook_size), axis=(0, 1, 2))       # (K,)
        entropy = -jnp.sum(jax.scipy.special.xlogy(usage, usage))
        return loss, {"loss": loss, "nelbo": jnp.mean(t["recon"] + t["prior_nll"]), "recon": jnp.mean(t["recon"]),
                      "codebook": jnp.mean(t["codebook"]), "commitment": jnp.mean(t["commit"]),
                      "prior_nll": jnp.mean(t["prior_nll"]), "perplexity": jnp.exp(entropy),
                      "codes_used": jnp.sum(usage > 0).astype(jnp.float32)}

    def trainable(self, params: Params, step: jax.Array) -> Params | None:
        """With ``codebook_ema``: everything but the codebook and its counts, which ``update_state``
        sets; else None (all)."""
        if not self.codebook_ema:
            return None
        return by_module(params, lambda name: name not in ("codebook", "codebook_count"))

    def update_state(self, params: Params, new_params: Params, batch: dict, keys: jax.Array,
                     axis_name: str | None = None) -> Params:
        """The train step's parameters after its optimizer update, ``new_params``, with the EMA
        codebook moved (:func:`ema_codebook`) by the assignments of ``batch["x_in"]`` under the
        step's own ``params``; counts and sums are summed over ``axis_name`` (pmap) when given.
        Without ``codebook_ema``, new_params unchanged."""
        del keys
        if not self.codebook_ema:
            return new_params
        z_e, indices = self.net.apply({"params": params}, batch["x_in"], self.batch_condition(batch),
                                      method=VQNet.assign)
        one_hot = jax.nn.one_hot(indices.reshape(-1), self.codebook_size, dtype=jnp.float32)   # (N, K)
        assigned, sums = jnp.sum(one_hot, axis=0), one_hot.T @ z_e.reshape(-1, z_e.shape[-1]).astype(jnp.float32)
        if axis_name is not None:
            assigned, sums = jax.lax.psum((assigned, sums), axis_name)
        codebook, count = ema_codebook(params["codebook"], params["codebook_count"], assigned, sums,
                                       self.codebook_ema)
        return dict(new_params, codebook=codebook, codebook_count=count)

    def eval_terms(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Per example (B,): ``nelbo`` = recon + kl nats, ``recon``, ``kl`` = the prior's -log p(k)
        (nats), and in bits ``recon_bpd``, ``prior_bpd`` (per image dimension) and
        ``prior_bits_per_code`` (per grid position; log2 K under a uniform prior)."""
        t = self.forward(params, batch, keys)
        recon, prior_nll = t["recon"], t["prior_nll"]
        bits, dims = evaluation.bits_per_dim, self.spec.num_dims
        return {"nelbo": recon + prior_nll, "recon": recon, "kl": prior_nll, "recon_bpd": bits(recon, dims),
                "prior_bpd": bits(prior_nll, dims), "prior_bits_per_code": bits(prior_nll, self.num_codes_per_image)}

    def log_weights(self, params: Params, x: jax.Array, keys: jax.Array, num_samples: int,
                    start: jax.Array | int = 0, cond: jax.Array | None = None,
                    x_in: jax.Array | None = None) -> jax.Array:
        raise ValueError("vqvae's posterior is one-hot: its IWAE bound is the NELBO of eval_terms")

    def encode(self, params: Params, x: jax.Array, labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Float input (B, H, W, C) -> the quantized grid flattened (B, h w D), and its log-variance
        (-inf: the code is deterministic), under the condition ``given(x, labels)``."""
        cond = self.condition(self.given(x, labels))
        code = self.net.apply({"params": params}, x, cond, method=VQNet.quantized).reshape(x.shape[0], -1)
        return code, jnp.full_like(code, -jnp.inf)

    def decode(self, params: Params, v: jax.Array, given: jax.Array | None = None) -> jax.Array:
        """Flattened grids of code vectors (B, h w D) -> mean images (B, H, W, C) in [0, 1], under
        the condition ``given`` (None when unconditioned)."""
        out = self.net.apply({"params": params}, v.reshape(v.shape[0], *self.grid, -1), self.condition(given),
                             method=VQNet.decode)
        return self.likelihood.mean(out)

    def reconstruct(self, params: Params, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Float input (B, H, W, C) -> mean images (B, H, W, C) in [0, 1] decoded from its quantized
        grid, under the condition ``given(x, labels)``."""
        return self.decode(params, self.encode(params, x, labels)[0], self.given(x, labels))

    def prior_logits(self, params: Params, codes: jax.Array) -> jax.Array:
        """Code indices int (B, h, w) -> the prior's logits (B, h, w, K) of each given the earlier ones."""
        return self.net.apply({"params": params}, jax.nn.one_hot(codes, self.codebook_size), method=VQNet.prior_logits)

    def sample_codes(self, params: Params, rng: jax.Array, num_samples: int,
                     temperature: float | jax.Array = 1.0) -> jax.Array:
        """Code grids int32 (num_samples, h, w) drawn from the prior (jaxae.nets.pixelcnn.sample_codes)."""
        return self.net.apply({"params": params}, rng, num_samples, self.grid, temperature, method=VQNet.draw)[0]

    def prior_draws(self, params: Params, rng: jax.Array, num_samples: int,
                    scale: float | jax.Array = 1.0) -> jax.Array:
        """The codebook vectors of ``sample_codes``'s grids, flattened (num_samples, h w D);
        ``scale`` is the temperature that divides the prior's logits."""
        vectors = self.net.apply({"params": params}, rng, num_samples, self.grid, scale, method=VQNet.draw)[1]
        return vectors.reshape(num_samples, -1)

    def noise_scale(self, temperatures: list[float]) -> float | jax.Array:
        """One temperature: it divides the PixelCNN prior's logits when sampling codes."""
        return super().noise_scale(temperatures)

