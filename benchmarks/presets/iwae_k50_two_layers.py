"""IWAE with k = 50 and Burda et al. (2015)'s two stochastic layers
(784-200-200-z1(100)-100-100-z2(50), tanh), Bernoulli likelihood, static binarized MNIST;
tuned on `validation`, reported on `test` (IWAE k = 5,000). Burda et al.: 3,280 epochs,
batch 20. Runs until stopped (use the launcher's --budget); rerun to resume."""


def get_config():
    return {"dataset": "binarized_mnist", "eval_split": "validation", "model": "iwae",
            "num_importance_samples": 50, "stochastic_layers": 2, "arch": "mlp_burda", "latent_dim": 100,
            "top_latent_dim": 50, "batch_size": 100, "learning_rate": 1e-3, "steps": 10_000_000,
            "eval_every": 10000, "checkpoint_every": 2000, "keep_checkpoints": 2}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000, "batch_size": 500, "chunk": 1000}
