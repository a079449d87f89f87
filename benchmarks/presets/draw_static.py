"""DRAW (Gregor et al. 2015) with attention on static binarized MNIST (28 x 28): 64 glimpses,
LSTMs of 256 units, 100 latents per glimpse, a 2 x 2 read and a 5 x 5 write grid (the
paper's MNIST network). Paper: -log p(x) <= 80.97 nats per test digit, its NELBO (the
variational bound it trains); jaxae reports that NELBO and the tighter IWAE bound (k =
5,000), so compare the paper with jaxae's NELBO. Tuned on `validation`, reported on `test`.
jaxae: not yet measured. The optimiser settings are jaxae's defaults (Adam, 1e-3) with the
gradient clipped to norm 100, not the paper's."""


def get_config():
    return {"dataset": "binarized_mnist", "eval_split": "validation", "model": "draw", "draw_attention": True,
            "draw_steps": 64, "draw_lstm": 256, "latent_dim": 100, "draw_read_size": 2, "draw_write_size": 5,
            "batch_size": 100, "epochs": 200, "grad_clip": 100.0, "eval_every": 20000, "checkpoint_every": 10000}


def get_evaluation():
    return {"split": "test", "iwae_samples": 5000}
