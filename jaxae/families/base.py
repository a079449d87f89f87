"""The interface every model family implements, and the shared latent-variable machinery.

A family is a frozen (hashable, jit-static) object whose methods are pure functions of
``(params, batch, keys)``. The training loop, evaluation, ``sample.py`` and logging use
only this interface and never a family's name:

- ``build(config, spec)`` (classmethod): the family for a validated config and the
  data's :class:`~jaxae.data.InputSpec`; ``check(config)`` (classmethod): the family's
  own config rules, raising ConfigError; ``settings``: the ObjectiveConfig fields it
  reads (any other one set away from its default is refused).
- ``init(rng) -> params``.
- ``loss(params, batch, keys, step) -> (loss, scalars)``: the training objective, a
  scalar in nats per image, and batch-mean scalars to log under the names returned.
  batch: {"x": float (B, H, W, C) the image the likelihood scores, "x_in": the encoder's
  input, "label"?: int (B,)} as made by :class:`jaxae.inputs.Preprocessing`; keys: one
  PRNG key per example (B,), of which the family uses fold ``inputs.MODEL_FOLD``.
- ``eval_terms(params, batch, keys)``: per-example evaluation numbers (B,), in nats.
- ``log_weights(params, x, keys, num_samples, start, cond)``: log p(x, z_s) - log q(z_s|x)
  (B, S), what the IWAE bound needs (``bound`` is False when the family has none).
- ``conditioning`` (jaxae.conditioning.Conditioning): what the model is conditioned on
  (nothing, the label, or the low-resolution image x_low); ``given(x, labels)``: that
  condition for images x and their labels; ``condition(given)``: the networks' input for it
  (``cond`` above); ``conditions`` (class): the kinds the family accepts.
- ``encode(params, x, labels) -> (mean, logvar)`` of the code, (B, latent_dim), its
  condition ``given(x, labels)``; ``decode(params, v, given)``: mean images in [0, 1] from
  prior draws v (B, prior_dim) under the condition ``given`` (labels for a label-conditioned
  model, x_low for a low-res-conditioned one);
  ``noise_scale(temperatures)``: how temperatures scale the prior draws;
  ``prior_draws(params, rng, num, scale)``: draws (num, prior_dim) that ``decode`` turns
  into samples from the family's prior (N(0, scale^2 I) unless the family's prior is
  another, e.g. the VampPrior); ``example_prior_draws(params, keys)``: one such draw per
  example key (what a loss comparing q(z) with p(z) uses); ``has_prior``: False when the
  family has no prior of its own and is sampled through the density fitted to its codes
  (jaxae.priors).
- ``reconstruct(params, x, labels)``: mean images (B, H, W, C) in [0, 1] of p(x|z) at the
  posterior's deterministic code of every stochastic layer (the training pass with zero
  noise): what reconstructions and their squared error show.
- ``inference_mask(params)``: which parameters belong to q(z|x) (True) and which to
  the generative model p(x|z) (False), for objectives that treat them differently.
- ``trainable(params, step)``: which parameters the train step may update at ``step``
  (a pytree of bools like ``params``), or None (the default): all of them. For families
  trained in stages (two_stage).
- ``update_state(params, new_params, batch, keys, axis_name)``: the parameters after a train
  step, given the step's ``params``, its optimizer-updated ``new_params`` and its model batch:
  for state no gradient moves (vqvae's EMA codebook); by default ``new_params``.

:class:`LatentModel` implements all of it for networks with the four methods of
jaxae.nets.stochastic; a family subclasses it and writes ``loss`` (and ``network`` when its
network wraps or replaces ``flat_net``'s, ``build`` when more differs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxae import inputs, nets
from jaxae.conditioning import CONDITIONS, Conditioning
from jaxae.config import HVAE_PRESETS, Config
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.likelihoods import Likelihood, make_likelihood

Params = Any


def by_module(params: Params, value_of) -> Any:
    """A pytree like ``params`` whose leaves under each top-level module ``name`` all equal
    ``value_of(name)`` (a bool or traced bool): the masks ``inference_mask`` and ``trainable`` return."""
    def fill(sub: Any, value: Any) -> Any:
        return jax.tree.map(lambda _: value, sub)

    return {name: fill(sub, value_of(name)) for name, sub in params.items()}


def conditioning_of(config: Config, spec: InputSpec) -> Conditioning:
    """The condition of ``config.model`` (--condition, --conditional, --lowres_factor) for ``spec``."""
    return Conditioning.of(config.model.condition_kind, spec, config.model.lowres_factor)


def likelihood_of(config: Config) -> Likelihood:
    m = config.model
    return make_likelihood(m.likelihood, binary_targets=config.data.binarize != "none",
                           gaussian_scale=m.gaussian_scale, num_mixtures=m.num_mixtures)


def flat_net(config: Config, spec: InputSpec, likelihood: Likelihood) -> tuple[nn.Module, int, int]:
    """The one- or two-stochastic-layer network of ``config.model``: (net, code size, noise size)."""
    m = config.model
    hidden, top_hidden, act = m.mlp_settings()
    kind = "mlp" if m.arch.startswith("mlp") else m.arch
    encoder, decoder = nets.encoder_decoder(kind, spec.image_shape, likelihood.output_channels(spec.image_shape[2]),
                                            m.latent_dim, hidden_dims=hidden, channels=m.channels, activation=act,
                                            dtype=config.run.dtype)
    if m.stochastic_layers == 1:
        return nets.OneLayerNet(encoder=encoder, decoder=decoder), m.latent_dim, m.latent_dim
    dtype = nets.compute_dtype(config.run.dtype)
    top, bottom = m.top_latent_dim, m.latent_dim
    net = nets.TwoLayerNet(x_encoder=encoder, x_decoder=decoder, bottom_dim=bottom,
                           z_encoder=nets.MLPEncoder(top_hidden, top, act, dtype),
                           z_decoder=nets.MLPEncoder(tuple(reversed(top_hidden)), bottom, act, dtype))
    return net, top, bottom + top


@dataclasses.dataclass(frozen=True)
class LatentModel:
    """A latent-variable model: a network (jaxae.nets.stochastic's interface), a likelihood
    and the input spec. Hashable: jit-static.

    latent_dim: size of the code ``encode`` returns; noise_dim: size of the network's
    noise eps (latent_dim for one stochastic layer, D1 + D2 for two, every group's for
    the hierarchical net); conditioning: what encoder and decoder are conditioned on
    (jaxae.conditioning); convolutional: the network is convolutional (jaxae.hardware picks steps per call by it).
    """

    net: nn.Module
    likelihood: Likelihood
    spec: InputSpec
    latent_dim: int
    noise_dim: int
    conditioning: Conditioning = Conditioning()
    convolutional: bool = False

    name: ClassVar[str] = "latent"
    settings: ClassVar[tuple[str, ...]] = ()
    deterministic: ClassVar[bool] = False  # True: no posterior noise and no likelihood bound.
    conditions: ClassVar[tuple[str, ...]] = CONDITIONS  # The condition kinds the family accepts.
    supports_conditional: ClassVar[bool] = True  # False: the older spelling of conditions = ("none",).
    two_layers: ClassVar[bool] = True  # False: the family's network has one stochastic layer only.

    @classmethod
    def check(cls, config: Config) -> None:
        """The family's own config rules (ConfigError); by default, a flat MLP/conv network."""
        if config.model.arch in HVAE_PRESETS:
            raise ConfigError(f"--arch {config.model.arch} is a preset of --model hvae, not of "
                              f"--model {config.model.family}")
        if config.run.remat:
            raise ConfigError(f"--remat is implemented for --model hvae, not --model {config.model.family}")
        if not cls.two_layers and config.model.stochastic_layers != 1:
            raise ConfigError(f"--model {config.model.family} has one stochastic layer; leave "
                              "--stochastic_layers at 1")

    @classmethod
    def network(cls, config: Config, spec: InputSpec, likelihood: Likelihood) -> tuple[nn.Module, int, int]:
        """(net, latent_dim, noise_dim) of the family: ``flat_net``'s unless a family wraps it."""
        return flat_net(config, spec, likelihood)

    @classmethod
    def build(cls, config: Config, spec: InputSpec) -> "LatentModel":
        likelihood = likelihood_of(config)
        net, latent_dim, noise_dim = cls.network(config, spec, likelihood)
        return cls(net=net, likelihood=likelihood, spec=spec, latent_dim=latent_dim, noise_dim=noise_dim,
                   conditioning=conditioning_of(config, spec),
                   convolutional=not config.model.arch.startswith("mlp"), **cls.options(config))

    @classmethod
    def options(cls, config: Config) -> dict[str, Any]:
        """The family's own fields, from its ``settings`` in ``config.objective``."""
        return {name: getattr(config.objective, name) for name in cls.settings}

    @property
    def bound(self) -> bool:
        """Whether the family has an importance-sampled likelihood bound (IWAE, from
        ``log_weights``) that evaluation computes; False when it has no bound, or when the
        bound would equal the NELBO of its ``eval_terms`` (a one-hot posterior)."""
        return not self.deterministic

    @property
    def has_prior(self) -> bool:
        """Whether ``prior_draws`` samples the model's own prior; False (the deterministic
        families by default) means samples come from the density fitted to the codes."""
        return not self.deterministic

    @property
    def prior_dim(self) -> int:
        """Size of the N(0, I) draws that ``decode`` turns into prior samples (the code)."""
        return self.latent_dim

    @property
    def conditional(self) -> bool:
        """Whether the model is conditioned on anything (the label or x_low)."""
        return self.conditioning.active

    def given(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array | None:
        """The condition of images x (B, H, W, C) in [0, 1] with labels (B,) or None: the labels,
        x_low (B, H/F, W/F, C), or None (``Conditioning.given``)."""
        return self.conditioning.given(x, labels)

    def condition(self, given: jax.Array | None) -> jax.Array | None:
        """The networks' input for a given: one-hot (B, num_classes) of labels, x_low, or None
        for an unconditional model."""
        return self.conditioning.net_input(given, self.name)

    def batch_condition(self, batch: dict) -> jax.Array | None:
        """The networks' condition of a model batch: from its clean image ``x`` and its labels."""
        return self.condition(self.given(batch["x"], batch.get("label")))

    def init(self, rng: jax.Array) -> Params:
        x = jnp.zeros((1, *self.spec.image_shape), jnp.float32)
        cond = self.condition(self.conditioning.placeholder(1))
        return self.net.init(rng, x, jnp.zeros((1, self.noise_dim)), cond)["params"]

    def noise(self, keys: jax.Array) -> jax.Array:
        """Per-example keys (B,) -> the network's noise eps (B, noise_dim) (zeros when deterministic)."""
        if self.deterministic:
            return jnp.zeros((keys.shape[0], self.noise_dim))
        return jax.vmap(lambda k: jax.random.normal(k, (self.noise_dim,)))(inputs.fold(keys, inputs.MODEL_FOLD))

    def forward(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """The training pass: ``recon`` = -log p(x|z) (B,), ``kl_per_unit`` (B, U) and ``code`` (B, latent_dim)."""
        out, kl_per_unit, code = self.net.apply({"params": params}, batch["x_in"], self.noise(keys),
                                                self.batch_condition(batch))
        return {"recon": -self.likelihood.log_prob(out, batch["x"]), "kl_per_unit": kl_per_unit, "code": code}

    def posterior_sample(self, params: Params, batch: dict, keys: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z, mean, logvar), each (B, latent_dim): z ~ q(z|x_in) = N(mean, diag exp(logvar))
        with the training pass's noise (``noise(keys)``); one stochastic layer."""
        mean, logvar = self.encode_batch(params, batch)
        return mean + jnp.exp(0.5 * logvar) * self.noise(keys), mean, logvar

    def encode_batch(self, params: Params, batch: dict) -> tuple[jax.Array, jax.Array]:
        """q(z|x_in) of a model batch under its condition (from the clean image ``x``, as in the
        training pass): mean and logvar, each (B, latent_dim)."""
        return self.net.apply({"params": params}, batch["x_in"], self.batch_condition(batch),
                              method=type(self.net).encode)

    def eval_terms(self, params: Params, batch: dict, keys: jax.Array) -> dict[str, jax.Array]:
        """Per-example evaluation terms (B,) in nats: ``nelbo``, ``recon``, ``kl``, and
        ``kl_per_unit`` (B, U)."""
        terms = self.forward(params, batch, keys)
        kl = jnp.sum(terms["kl_per_unit"], axis=-1)
        return {"nelbo": terms["recon"] + kl, "recon": terms["recon"], "kl": kl, "kl_per_unit": terms["kl_per_unit"]}

    def loss(self, params: Params, batch: dict, keys: jax.Array, step: jax.Array | int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError(f"{type(self).__name__} must define loss")

    def log_weights(self, params: Params, x: jax.Array, keys: jax.Array, num_samples: int,
                    start: jax.Array | int = 0, cond: jax.Array | None = None,
                    x_in: jax.Array | None = None) -> jax.Array:
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for z_s ~ q(z|x), s = start .. start+num_samples-1.

        x: float model input (B, H, W, C) that the likelihood scores; x_in: the encoder's
        input (default x); keys: per-example keys (B,) -> (B, num_samples) nats. Sample s
        uses fold_in(fold_in(key, MODEL_FOLD), s), so drawing k samples in chunks gives the
        same samples whatever the chunk size. log mean_s exp(log w_s) is the IWAE bound
        on log p(x) (Burda et al. 2015).
        """
        x_in = x if x_in is None else x_in
        index = start + jnp.arange(num_samples)
        draw = lambda key: jax.random.normal(jax.random.fold_in(key, 0), (self.noise_dim,))  # noqa: E731
        model_keys = inputs.fold(keys, inputs.MODEL_FOLD)
        eps = jax.vmap(lambda k: jax.vmap(lambda i: draw(jax.random.fold_in(k, i)))(index))(model_keys)  # (B, S, E)
        out, log_ratio = self.net.apply({"params": params}, x_in, eps, cond, method=type(self.net).sample_and_score)
        return self.likelihood.log_prob(out, x[:, None]) + log_ratio

    def encode(self, params: Params, x: jax.Array, labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Float input (B, H, W, C) -> q(z|x) mean and logvar of the code, each (B, latent_dim),
        under the condition ``given(x, labels)``."""
        return self.net.apply({"params": params}, x, self.condition(self.given(x, labels)),
                              method=type(self.net).encode)

    def decode(self, params: Params, v: jax.Array, given: jax.Array | None = None) -> jax.Array:
        """Prior draws or codes (B, prior_dim) -> mean images (B, H, W, C) in [0, 1], under the
        condition ``given`` (labels (B,) or x_low (B, H/F, W/F, C); None if unconditional)."""
        out = self.net.apply({"params": params}, v, self.condition(given), method=type(self.net).decode)
        return self.likelihood.mean(out)

    def reconstruct(self, params: Params, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Float input (B, H, W, C) -> mean images (B, H, W, C) in [0, 1] of the training pass
        with zero noise, under the condition ``given(x, labels)``: every stochastic layer at its
        posterior's deterministic code (its mean, through the flow where there is one), each
        lower layer inferred given the ones above. For one stochastic layer this is
        ``decode(encode(x)[0])``; for several, decoding the top code alone would put the lower
        layers at their prior means instead and lose what they carry of x."""
        out, _, _ = self.net.apply({"params": params}, x, jnp.zeros((x.shape[0], self.noise_dim)),
                                   self.condition(self.given(x, labels)))
        return self.likelihood.mean(out)

    def prior_draws(self, params: Params, rng: jax.Array, num_samples: int,
                    scale: float | jax.Array = 1.0) -> jax.Array:
        """Draws (num_samples, prior_dim) float32 from the prior, for ``decode``: here
        N(0, scale^2 I); ``scale`` is a scalar or (prior_dim,) (``noise_scale``'s result)."""
        del params
        return scale * jax.random.normal(rng, (num_samples, self.prior_dim))

    def example_prior_draws(self, params: Params, keys: jax.Array) -> jax.Array:
        """One prior draw per example (B, prior_dim), ``prior_draws`` from each key's fold
        ``inputs.PRIOR_FOLD`` (independent of the posterior noise): for batch statistics
        that compare q(z) with p(z), such as an MMD."""
        return jax.vmap(lambda k: self.prior_draws(params, k, 1)[0])(inputs.fold(keys, inputs.PRIOR_FOLD))

    def inference_mask(self, params: Params) -> Any:
        """A pytree of bools like ``params``: True for the parameters of q(z|x) (the top-level
        modules whose names end in ``encoder``), False for the generative model's."""
        return by_module(params, lambda name: name.endswith("encoder"))

    def trainable(self, params: Params, step: jax.Array) -> Any | None:
        """A pytree of (traced) bools like ``params``: which parameters the update at ``step``
        may change (the others keep their values whatever the optimizer says); None: all."""
        del params, step
        return None

    def update_state(self, params: Params, new_params: Params, batch: dict, keys: jax.Array,
                     axis_name: str | None = None) -> Params:
        """The train step's parameters after its update: ``new_params`` (the optimizer's, after
        ``trainable``) with any state that no gradient moves set from the step's model ``batch``
        under its ``params``, sums over the pmap axis ``axis_name`` when given; here unchanged."""
        del params, batch, keys, axis_name
        return new_params

    def noise_scale(self, temperatures: list[float]) -> float | jax.Array:
        """Sampling temperatures -> the scale of the (prior_dim,) N(0, I) draws: one value here."""
        if len(temperatures) != 1:
            raise ConfigError(f"--temperature takes one value for {self.name}; per-group lists are for "
                              "hierarchical models")
        return temperatures[0]
