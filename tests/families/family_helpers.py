"""Shared by the family tests: random parameters away from the initialisation, tiny binary
images, and a 2-step run through the training loop that then samples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from conftest import random_like
from jaxae import inputs, priors, sampling, workdir
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.training import train_and_evaluate

SHAPE = (6, 6, 1)
BINARY = InputSpec(image_shape=SHAPE, num_classes=10, mode="binary")


def random_params(model, seed: int, scale: float = 1.0):
    """Parameters of ``model`` drawn afresh from a seeded normal (shapes from model.init, traced
    only): kernels with std scale / sqrt(fan_in), other leaves with std scale."""
    return random_like(jax.eval_shape(model.init, jax.random.key(0)), seed, scale)


def binary_images(n: int, seed: int = 1) -> jax.Array:
    """float32 (n, 6, 6, 1) of zeros and ones."""
    return jnp.asarray(np.random.default_rng(seed).random((n, *SHAPE)) < 0.3, jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def posterior_pieces(models, params, x, keys):
    """The training pass of one-stochastic-layer ``models`` (a tuple sharing ``params``) on binary
    x, by hand: (mean, logvar, z, decoded z, [each model's loss]), z = mean + std * eps with eps
    from each key's fold inputs.MODEL_FOLD."""
    mean, logvar = models[0].encode(params, x)
    eps = jax.vmap(lambda k: jax.random.normal(k, (mean.shape[1],)))(inputs.fold(keys, inputs.MODEL_FOLD))
    z = mean + jnp.exp(0.5 * logvar) * eps
    batch = {"x": x, "x_in": x}
    return mean, logvar, z, models[0].decode(params, z), [m.loss(params, batch, keys) for m in models]


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def train_two_steps_and_sample(tfds_dir: str, path: str, given=None, **settings):
    """Trains ``settings`` (the family and its options) for 2 steps on mnist_5k through
    train_and_evaluate, loads it back and draws 4 samples (under the condition ``given`` of a
    conditioned model, one per sample): (final record, model, images)."""
    tiny = dict(hidden_dims=(16,), latent_dim=3)     # settings may override these
    config = Config.create(data_dir=tfds_dir, steps=2, eval_every=2, checkpoint_every=2, steps_per_call=1,
                           batch_size=16, train_split="train[:64]", eval_split="test[:32]", **{**tiny, **settings})
    final = train_and_evaluate(config, path, progress=False)
    model, params, step = workdir.load_model(path)
    assert final["step"] == 2 == step and model.name == settings["model"]
    prior = None if model.has_prior else priors.load(path)     # The density fitted to the codes.
    assert model.has_prior or prior is not None
    images = np.asarray(sampling.sample_prior(model, params, jax.random.key(0), 4, given=given, prior=prior))
    assert images.shape == (4, 28, 28, 1) and images.min() >= 0 and images.max() <= 1
    return final, model, images


def mmd_u_statistic(x, y):
    """numpy, loops: the unbiased MMD^2 of samples x, y (N, D) with k(a, b) = C / (C + |a - b|^2),
    C = 2 D: mean over i != j of k(x_i, x_j) + k(y_i, y_j), minus twice the mean over all i, j
    of k(x_i, y_j)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, d = x.shape
    c = 2.0 * d

    def k(a, b):
        return c / (c + np.sum((a - b) ** 2))

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return within - 2.0 * sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n**2


def cross_entropy(probs, x):
    """numpy: -log p(x) of binary images under independent Bernoulli probabilities, per image."""
    probs, x = np.asarray(probs, np.float64), np.asarray(x, np.float64)
    return -np.sum(x * np.log(probs) + (1 - x) * np.log1p(-probs), axis=(1, 2, 3))


def prior_draws(keys, dim):
    """N(0, I) draws (B, dim) from each example key's fold 5 (inputs.PRIOR_FOLD), by hand."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 5), (1, dim))[0])(keys)
