"""The hierarchical VAE (hvae_mnist: 9 latent groups, 0.27 M parameters) on static binarized
MNIST, with an EMA of the parameters and VDVAE's stabilisers. Runs until stopped."""


def get_config():
    return {"dataset": "binarized_mnist", "eval_split": "validation", "model": "hvae", "arch": "hvae_mnist",
            "batch_size": 128, "learning_rate": 1e-3, "ema_decay": 0.999, "grad_clip": 200.0,
            "skip_threshold": 3000.0, "steps": 10_000_000, "eval_every": 10000, "checkpoint_every": 2000,
            "keep_checkpoints": 2}


def get_evaluation():
    return {"split": "test", "iwae_samples": 500, "batch_size": 100, "chunk": 50}
