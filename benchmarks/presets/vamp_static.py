"""VampPrior VAE (Tomczak & Welling 2018), K = 500 pseudo-inputs, on static binarized MNIST;
tuned on `validation`, reported on `test` with the IWAE bound, k = 5,000. Paper: 85.57;
pythae's reproduction: 85.79. jaxae: not yet measured.

Closest jaxae settings to pythae's run, which differ from it: 40 latents, MLP 300-300
(pythae: gated dense layers, which jaxae lacks; ReLU here), batch 100, 2,000 epochs,
learning rate 1e-4 (pythae: RMSprop with step decay; Adam here), the KL warmed up over 100
epochs (50,000 steps of 500 per epoch)."""


def get_config():
    return {"dataset": "binarized_mnist", "eval_split": "validation", "model": "vamp", "vamp_components": 500,
            "hidden_dims": (300, 300), "latent_dim": 40, "activation": "relu", "batch_size": 100, "epochs": 2000,
            "learning_rate": 1e-4, "kl_warmup_steps": 50000, "eval_every": 20000, "checkpoint_every": 10000}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000}
