"""jaxae: autoencoder-based image generation in JAX/Flax.

The pieces, as pure functions and small frozen objects:

    config = jaxae.Config(dataset="mnist_5k", latent_dim=16)
    model = jaxae.make_model(config, spec)                  # spec: jaxae.data.InputSpec
    optimizer = jaxae.make_optimizer(config, total_steps)
    state = jaxae.create_train_state(model, optimizer, key)
    step = jax.jit(jaxae.make_train_step(model, optimizer))   # or pmap with axis_name
    state, metrics = step(state, batch, key)
    images = jaxae.sample_prior(model, state.params, key, 64)
    jaxae.train_and_evaluate(config, workdir)               # what train.py runs
"""

from jaxae.checkpoints import Checkpointer, load_model
from jaxae.config import Config, ConfigError, validate
from jaxae.data import InputSpec
from jaxae.evaluation import bits_per_dim, evaluate
from jaxae.models import AutoencoderModel, make_model
from jaxae.sampling import reconstruct, sample_prior
from jaxae.training import (TrainState, create_train_state, make_optimizer, make_train_step,
                            train_and_evaluate)

__version__ = "0.1.0"

__all__ = [
    "Checkpointer", "Config", "ConfigError", "InputSpec", "TrainState", "AutoencoderModel", "bits_per_dim",
    "create_train_state", "evaluate", "load_model", "make_model", "make_optimizer", "make_train_step",
    "reconstruct", "sample_prior", "train_and_evaluate", "validate",
]
