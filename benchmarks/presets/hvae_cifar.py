"""The hierarchical VAE with the discretized logistic mixture on CIFAR-10: train on
train[:45000], tune on train[45000:], report on test; random horizontal flips. Use
--arch hvae_cifar_small for a CPU. Runs until stopped."""


def get_config():
    return {"dataset": "cifar10", "train_split": "train[:45000]", "eval_split": "train[45000:]", "model": "hvae",
            "arch": "hvae_cifar", "likelihood": "logistic_mixture", "binarize": "none", "hflip": True,
            "batch_size": 32, "learning_rate": 5e-4, "warmup_steps": 100, "ema_decay": 0.999, "grad_clip": 200.0,
            "steps": 10_000_000, "eval_every": 5000, "checkpoint_every": 1000, "keep_checkpoints": 2}


def get_evaluation():
    return {"split": "test", "iwae_samples": 20, "batch_size": 50, "chunk": 10}
