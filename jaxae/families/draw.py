"""DRAW (Gregor et al. 2015, "DRAW: A Recurrent Neural Network For Image Generation"), ``draw``.

A recurrent VAE that builds the image on a canvas in T = ``draw_steps`` steps (the paper:
64 for MNIST; default 16, a CPU-sized choice). With h^dec_0 = 0, c_0 = 0 and, for t = 1..T,

    x^_t = x - mean(c_{t-1})                          the error image (mean: sigmoid for Bernoulli)
    r_t = read(x, x^_t, h^dec_{t-1})
    h^enc_t = LSTM_enc(h^enc_{t-1}, [r_t, h^dec_{t-1}])
    q(z_t | x, z_<t) = N(mu_t, diag sigma_t^2) from a linear layer of h^enc_t
    h^dec_t = LSTM_dec(h^dec_{t-1}, z_t)
    c_t = c_{t-1} + write(h^dec_t)

and p(x | z_{1:T}) the likelihood (``--likelihood``; the paper's Bernoulli(sigmoid(c_T)) on
binarized data) with the canvas c_T as its parameters (B, H, W, K). p(z_t) = N(0, I) for
every t, so the loss is -log p(x|z) + sum_t KL(q(z_t|x, z_<t) || N(0, I)), each KL in
closed form; ``beta``, ``kl_warmup_steps`` and ``free_bits`` act as in the VAE, over the
T * latent_dim units. The IWAE bound's log-weights draw z_{1:T} jointly from q (step by
step, each given the earlier draws) and score sum_t [log N(z_t; 0, I) - log q(z_t|x, z_<t)].

read/write without attention (the default): r_t = [x, x^_t] (all pixels), write a linear
layer of h^dec_t to a (H, W, K) patch. With ``draw_attention`` (the paper's eqs. 19-29):
a linear layer of h^dec gives (g~X, g~Y, log sigma^2, log delta~, log gamma) and an
N x N grid of Gaussian filters (:func:`filterbank`); read = gamma [F_Y x F_X^T,
F_Y x^ F_X^T] with N = ``draw_read_size`` (paper: 2 on MNIST) from h^dec_{t-1}, write =
(1/gamma^) F^_Y^T w_t F^_X with w_t an N x N x K patch from h^dec_t, N =
``draw_write_size`` (paper: 5). Pixel positions are a = 1..A (A the width; b = 1..B the
height), so g~ = 0 is the image's centre.

The steps are one ``lax.scan`` (flax ``nn.scan``) of one compiled step body. The noise, the
code and the prior draws are (B, T * latent_dim), step-major (z_1's dimensions first);
``encode`` returns the posterior means along the mean path (every z_t = mu_t) and
``decode`` runs the decoder alone (LSTM_dec and write) on given z_{1:T}, so prior samples
are decode(N(0, I) draws). Float32; the LSTMs are ``draw_lstm`` units wide (paper: 256).

Conditioned (``--conditional`` or ``--condition lowres``), the condition c flattened (the
one-hot label, or x_low's pixels) joins both LSTMs' inputs at every step:
LSTM_enc(h^enc_{t-1}, [r_t, h^dec_{t-1}, c]) and LSTM_dec(h^dec_{t-1}, [z_t, c]); p(z_t) stays
N(0, I).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import distributions as dist
from jaxae.config import Config, ModelConfig
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families.base import conditioning_of, likelihood_of
from jaxae.families.vae import VAE
from jaxae.likelihoods import Likelihood


def filterbank(attention: jax.Array, height: int, width: int, size: int
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The paper's N x N grid of Gaussian filters from its five attention parameters.

    attention (B, 5) = (g~X, g~Y, log sigma^2, log delta~, log gamma) -> F_Y (B, N, height),
    F_X (B, N, width), gamma (B,). With A = width, B = height (pixel positions 1..A, 1..B):
    g_X = (A + 1)/2 (g~X + 1), g_Y = (B + 1)/2 (g~Y + 1), delta = (max(A, B) - 1)/(N - 1)
    delta~, filter centres mu^i_X = g_X + (i - N/2 - 1/2) delta for i = 1..N (likewise Y),
    F_X[i, a] = exp(-(a - mu^i_X)^2 / (2 sigma^2)) / Z_i, each row normalised to sum 1.
    """
    gx_, gy_, log_var, log_delta, log_gamma = jnp.moveaxis(attention, -1, 0)
    delta = (max(height, width) - 1) / (size - 1) * jnp.exp(log_delta)
    offsets = jnp.arange(1, size + 1) - size / 2 - 0.5                                 # (N,)

    def filters(centre, length):
        mu = centre[:, None] + offsets * delta[:, None]                                 # (B, N)
        sq = jnp.square(jnp.arange(1, length + 1) - mu[..., None])                     # (B, N, length)
        return jax.nn.softmax(-sq / (2.0 * jnp.exp(log_var))[:, None, None], axis=-1)

    return (filters((height + 1) / 2 * (gy_ + 1), height), filters((width + 1) / 2 * (gx_ + 1), width),
            jnp.exp(log_gamma))


def attention_read(attention: jax.Array, images: list[jax.Array], size: int) -> jax.Array:
    """gamma [F_Y x F_X^T for x in images], each image (B, H, W, C) -> (B, len(images) * N * N * C)."""
    f_y, f_x, gamma = filterbank(attention, *images[0].shape[1:3], size)
    glimpses = [jnp.einsum("bnh,bhwc,bmw->bnmc", f_y, x, f_x).reshape(x.shape[0], -1) for x in images]
    return gamma[:, None] * jnp.concatenate(glimpses, axis=-1)


def attention_write(attention: jax.Array, patch: jax.Array, height: int, width: int) -> jax.Array:
    """(1/gamma) F_Y^T w F_X: the patch w (B, N, N, K) written to a (B, height, width, K) canvas."""
    f_y, f_x, gamma = filterbank(attention, height, width, patch.shape[1])
    return jnp.einsum("bnh,bnmk,bmw->bhwk", f_y, patch, f_x) / gamma[:, None, None, None]


def _zero_state(batch: int, units: int) -> tuple[jax.Array, jax.Array]:
    return jnp.zeros((batch, units)), jnp.zeros((batch, units))


def _with(v: jax.Array, cond: jax.Array | None) -> jax.Array:
    """(B, D) and an optional flattened condition (B, K) -> (B, D [+ K])."""
    return v if cond is None else jnp.concatenate([v, cond], axis=-1)


def _flat(cond: jax.Array | None) -> jax.Array | None:
    """The networks' condition (B, ...) flattened to (B, K) float32, or None."""
    return None if cond is None else cond.reshape(cond.shape[0], -1).astype(jnp.float32)


class DrawEncoder(nn.Module):
    """One step of q: read, LSTM_enc, and q(z_t | .)'s (mean, logvar), each (B, latent_dim).
    read_size 0: read the whole images."""

    lstm_units: int
    latent_dim: int
    read_size: int

    @nn.compact
    def __call__(self, state, x: jax.Array, x_hat: jax.Array, h_dec: jax.Array, cond: jax.Array | None = None):
        """cond: the flattened condition (B, K) or None."""
        if self.read_size:
            r = attention_read(nn.Dense(5, name="read_attention")(h_dec), [x, x_hat], self.read_size)
        else:
            r = jnp.concatenate([x.reshape(x.shape[0], -1), x_hat.reshape(x.shape[0], -1)], axis=-1)
        state, h = nn.LSTMCell(self.lstm_units, name="lstm")(state, _with(jnp.concatenate([r, h_dec], axis=-1), cond))
        mean, logvar = jnp.split(nn.Dense(2 * self.latent_dim, name="posterior")(h), 2, axis=-1)
        return state, mean, logvar


class DrawDecoder(nn.Module):
    """One step of p: LSTM_dec on z_t, and write(h^dec_t) (B, *out_shape). write_size 0:
    a linear layer to the whole canvas."""

    lstm_units: int
    out_shape: tuple[int, int, int]
    write_size: int

    @nn.compact
    def __call__(self, state, z: jax.Array, cond: jax.Array | None = None):
        """cond: the flattened condition (B, K) or None."""
        state, h = nn.LSTMCell(self.lstm_units, name="lstm")(state, _with(z, cond))
        height, width, channels = self.out_shape
        if not self.write_size:
            return state, nn.Dense(math.prod(self.out_shape), name="write")(h).reshape(-1, *self.out_shape)
        n = self.write_size
        patch = nn.Dense(n * n * channels, name="write_patch")(h).reshape(-1, n, n, channels)
        return state, attention_write(nn.Dense(5, name="write_attention")(h), patch, height, width)


class DrawNet(nn.Module):
    """The DRAW recurrence with the four methods of jaxae.nets.stochastic; noise, codes and
    prior draws are (B, steps * latent_dim), step-major."""

    likelihood: Likelihood
    out_shape: tuple[int, int, int]        # (H, W, K): the canvas, K likelihood parameters per pixel
    steps: int
    latent_dim: int
    lstm_units: int
    read_size: int = 0                     # 0: no attention
    write_size: int = 0

    def setup(self):
        self.encoder = DrawEncoder(self.lstm_units, self.latent_dim, self.read_size)
        self.decoder = DrawDecoder(self.lstm_units, self.out_shape, self.write_size)

    def _infer(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        """x (B, H, W, C), eps (B, T * D), the condition (B, ...) or None -> canvas c_T
        (B, H, W, K) and z, mean, logvar (B, T * D)."""
        batch = x.shape[0]

        def step(net, carry, eps_t, x, c):
            canvas, enc, dec = carry
            enc, mean, logvar = net.encoder(enc, x, x - net.likelihood.mean(canvas), dec[1], c)
            z = mean + jnp.exp(0.5 * logvar) * eps_t
            dec, delta = net.decoder(dec, z, c)
            return (canvas + delta, enc, dec), (z, mean, logvar)

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast, nn.broadcast), length=self.steps)
        carry = (jnp.zeros((batch, *self.out_shape)), _zero_state(batch, self.lstm_units),
                 _zero_state(batch, self.lstm_units))
        (canvas, _, _), per_step = scan(self, carry, self._time_major(eps), x, _flat(cond))
        return canvas, *(jnp.moveaxis(v, 0, 1).reshape(batch, -1) for v in per_step)

    def _time_major(self, v: jax.Array) -> jax.Array:
        """(B, T * D) -> (T, B, D)."""
        return jnp.moveaxis(v.reshape(v.shape[0], self.steps, self.latent_dim), 1, 0)

    def __call__(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        canvas, _, mean, logvar = self._infer(x, eps, cond)
        return canvas, dist.gaussian_kl(mean, logvar), mean

    def sample_and_score(self, x: jax.Array, eps: jax.Array, cond: jax.Array | None = None):
        batch, samples = eps.shape[:2]
        cond = None if cond is None else jnp.repeat(cond, samples, axis=0)
        canvas, z, mean, logvar = self._infer(jnp.repeat(x, samples, axis=0), eps.reshape(batch * samples, -1), cond)
        log_ratio = dist.standard_normal_log_prob(z) - dist.diag_gaussian_log_prob(z, mean, logvar)
        return canvas.reshape(batch, samples, *canvas.shape[1:]), log_ratio.reshape(batch, samples)

    def encode(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """The posterior means and log-variances (B, T * D) along the mean path z_t = mu_t."""
        _, _, mean, logvar = self._infer(x, jnp.zeros((x.shape[0], self.steps * self.latent_dim)), cond)
        return mean, logvar

    def decode(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        """z_{1:T} (B, T * D) -> the canvas c_T (B, H, W, K) of the decoder alone."""
        def step(net, carry, z_t, c):
            canvas, dec = carry
            dec, delta = net.decoder(dec, z_t, c)
            return (canvas + delta, dec), None

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast), length=self.steps)
        carry = (jnp.zeros((z.shape[0], *self.out_shape)), _zero_state(z.shape[0], self.lstm_units))
        (canvas, _), _ = scan(self, carry, self._time_major(z), _flat(cond))
        return canvas


# Model-config fields DRAW does not read (its networks are the LSTMs above): they must stay at their defaults.
UNUSED_MODEL_FIELDS = ("arch", "hidden_dims", "channels", "activation", "stochastic_layers", "top_latent_dim",
                       "top_hidden_dims")


@dataclasses.dataclass(frozen=True)
class DRAW(VAE):
    draw_steps: int = 16
    draw_lstm: int = 256
    draw_attention: bool = False
    draw_read_size: int = 2
    draw_write_size: int = 5

    name = "draw"
    settings = (*VAE.settings, "draw_steps", "draw_lstm", "draw_attention", "draw_read_size", "draw_write_size")

    @classmethod
    def check(cls, config: Config) -> None:
        super().check(config)
        defaults, o = ModelConfig(), config.objective
        for name in UNUSED_MODEL_FIELDS:
            if getattr(config.model, name) != getattr(defaults, name):
                raise ConfigError(f"--{name} is not used by --model draw (its networks are LSTMs of --draw_lstm "
                                  "units); leave it at its default")
        if config.run.dtype != "float32":
            raise ConfigError(f"--model draw computes in float32; got --dtype {config.run.dtype}")
        if not o.draw_attention:
            for name in ("draw_read_size", "draw_write_size"):
                if getattr(o, name) != getattr(type(o)(), name):
                    raise ConfigError(f"--{name} sets the attention grid; it needs --draw_attention")

    @classmethod
    def build(cls, config: Config, spec: InputSpec) -> "DRAW":
        likelihood = likelihood_of(config)
        o, (height, width, channels) = config.objective, spec.image_shape
        attention = o.draw_attention
        net = DrawNet(likelihood=likelihood, out_shape=(height, width, likelihood.output_channels(channels)),
                      steps=o.draw_steps, latent_dim=config.model.latent_dim, lstm_units=o.draw_lstm,
                      read_size=o.draw_read_size if attention else 0, write_size=o.draw_write_size if attention else 0)
        size = o.draw_steps * config.model.latent_dim
        return cls(net=net, likelihood=likelihood, spec=spec, latent_dim=size, noise_dim=size,
                   conditioning=conditioning_of(config, spec), **cls.options(config))
