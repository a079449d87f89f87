"""jaxae: autoencoder-based image generation in JAX/Flax.

The pieces, as pure functions and small frozen objects (layers, top down: the CLIs use
``training``; ``training`` uses ``families``, ``evaluation``, ``sampling``,
``checkpoints`` and ``workdir``; ``families`` use ``nets``, ``likelihoods``,
``distributions`` and ``objectives``, which take plain arguments):

    config = jaxae.Config.create(dataset="mnist_5k", latent_dim=16)   # sections: config.model.latent_dim
    model = jaxae.make_model(config, spec)                  # the family; spec: jaxae.InputSpec
    optimizer = jaxae.make_optimizer(config.optimizer, total_steps)
    state = jaxae.create_train_state(model, optimizer, key)
    step = jax.jit(jaxae.make_train_step(model, optimizer))   # or pmap with axis_name
    state, metrics = step(state, batch, key)                  # batch: {"image": uint8 (B, H, W, C)}
    images = jaxae.sample_prior(model, state.params, key, 64)
    jaxae.train_and_evaluate(config, workdir)               # what train.py runs
    model, params, step = jaxae.load_model(workdir)         # a trained run
    model, params = jaxae.load_pretrained(name)             # a model shipped with jaxae
"""

from jaxae.checkpoints import Checkpointer
from jaxae.config import Config, validate
from jaxae.data import InputSpec
from jaxae.errors import ConfigError, TrainingError
from jaxae.evaluation import bits_per_dim, evaluate
from jaxae.families import LatentModel, make_model, register
from jaxae.pretrained import load_pretrained
from jaxae.sampling import reconstruct, sample_prior
from jaxae.training import TrainState, create_train_state, make_optimizer, make_train_step, train_and_evaluate
from jaxae.workdir import load_model

__version__ = "0.2.0"

__all__ = [
    "Checkpointer", "Config", "ConfigError", "InputSpec", "LatentModel", "TrainState", "TrainingError",
    "bits_per_dim", "create_train_state", "evaluate", "load_model", "load_pretrained", "make_model", "make_optimizer",
    "make_train_step", "reconstruct", "register", "sample_prior", "train_and_evaluate", "validate",
]
