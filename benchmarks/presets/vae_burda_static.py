"""VAE with Burda et al. (2015)'s one-stochastic-layer MLP, 784-200-200-50 (tanh), Bernoulli
likelihood, on static binarized MNIST; tuned on `validation`, reported on `test` with the
IWAE bound, k = 5,000. 2,000 epochs with cosine-decayed Adam 1e-3 (Burda et al.: 3,280).
Literature: 88.71 (Burda et al., static-binarization appendix)."""


def get_config():
    return {"dataset": "binarized_mnist", "eval_split": "validation", "hidden_dims": (200, 200), "latent_dim": 50,
            "activation": "tanh", "epochs": 2000, "lr_schedule": "cosine", "warmup_steps": 1000,
            "eval_every": 20000, "checkpoint_every": 10000}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000}
