"""The Flax VAE example's configuration on static binarized MNIST: MLP 500, 20 latents,
Adam 1e-3, batch 128, 10 epochs. Flax README: test loss ~104 (this NELBO)."""


def get_config():
    return {"dataset": "binarized_mnist", "hidden_dims": (500,), "latent_dim": 20, "learning_rate": 1e-3,
            "batch_size": 128, "epochs": 10, "eval_every": 1000, "checkpoint_every": 1000}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000}
