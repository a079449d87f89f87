#!/usr/bin/env bash
# VAE with Burda et al. (2015)'s one-stochastic-layer MLP: 784-200-200-50 (tanh), Bernoulli
# likelihood, on static binarized MNIST; tuned on `validation`, reported on `test`.
# Burda et al. train 3,280 epochs; this uses 2,000 with a cosine-decayed Adam 1e-3.
# Resumable: rerun the same command to continue from the last checkpoint.
# Usage: benchmarks/quality/vae_burda.sh WORKDIR [extra train.py flags, e.g. --manual_dir DIR]
set -euo pipefail
workdir=${1:?usage: $0 WORKDIR [train.py flags]}; shift
python train.py --workdir "$workdir" --dataset binarized_mnist --eval_split validation \
  --hidden_dims 200,200 --latent_dim 50 --activation tanh --epochs 2000 --lr_schedule cosine \
  --warmup_steps 1000 --eval_every 20000 --checkpoint_every 10000 --no_progress "$@"
python evaluate.py --workdir "$workdir" --split test --iwae_samples 5000 --no_progress
