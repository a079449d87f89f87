"""IWAE, k = 50, with Burda et al. (2015)'s one-stochastic-layer MLP, 784-200-200-50 (tanh),
Bernoulli likelihood, on static binarized MNIST (50,000 train); tuned on `validation`,
reported on `test` with the IWAE bound, k = 5,000. 500 epochs of batch 128 (390 steps each:
195,000 steps) with cosine-decayed Adam 1e-3 (Burda et al.: 3,280 epochs, batch 20).
Literature: 87.10 (Burda et al., static-binarization appendix, k = 50, one stochastic
layer); pythae's reproduction 86.82."""


def get_config():
    return {"dataset": "binarized_mnist", "eval_split": "validation", "model": "iwae",
            "num_importance_samples": 50, "hidden_dims": (200, 200), "latent_dim": 50,
            "activation": "tanh", "batch_size": 128, "epochs": 500, "lr_schedule": "cosine", "warmup_steps": 1000,
            "eval_every": 20000, "checkpoint_every": 5000, "keep_checkpoints": 2}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000}
