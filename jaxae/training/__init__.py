"""Training: the state and optimizer (state), the one pure step (step), the loop with
chunking, checkpoints, stop and resume (loop), and what it writes (hooks)."""

from jaxae.training.loop import PMAP_AXIS, make_multi_step, train_and_evaluate
from jaxae.training.state import TrainState, create_train_state, ema_update, learning_rate, make_optimizer
from jaxae.training.step import global_norm, make_train_step, microbatches

__all__ = ["PMAP_AXIS", "TrainState", "create_train_state", "ema_update", "global_norm", "learning_rate",
           "make_multi_step", "make_optimizer", "make_train_step", "microbatches", "train_and_evaluate"]
