"""Reproducibility row 1: Burda et al. (2015)'s protocol on dynamically binarized MNIST.

59,600 training / 400 validation images of the 60,000 MNIST training digits, re-binarized
every time an image is used; the 10,000 test digits (one fixed binarization); the IWAE
bound with k = 5,000. One-stochastic-layer VAE, MLP 784-200-200-50 (tanh). Paper: 86.76.
Schedule: batch 100, Adam 1e-3 with 1,000 warm-up steps and cosine decay over 2,000 epochs
(Burda et al.'s own schedule is the preset vae_burda_schedule).
"""


def get_config():
    return {"dataset": "mnist", "train_split": "train[:59600]", "eval_split": "train[59600:]",
            "binarize": "dynamic", "hidden_dims": (200, 200), "latent_dim": 50, "activation": "tanh",
            "batch_size": 100, "learning_rate": 1e-3, "epochs": 2000, "lr_schedule": "cosine",
            "warmup_steps": 1000, "eval_every": 20000, "checkpoint_every": 10000, "keep_checkpoints": 2}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000}
