#!/usr/bin/env bash
# The Flax VAE example's configuration (github.com/google/flax examples/vae): MLP with 500
# hidden units, 20 latents, Adam 1e-3, batch 128, 10 epochs, TFDS binarized_mnist.
# Usage: benchmarks/quality/flax_example.sh WORKDIR [extra train.py flags, e.g. --manual_dir DIR]
set -euo pipefail
workdir=${1:?usage: $0 WORKDIR [train.py flags]}; shift
python train.py --workdir "$workdir" --dataset binarized_mnist --hidden_dims 500 --latent_dim 20 \
  --learning_rate 1e-3 --batch_size 128 --epochs 10 --eval_every 1000 --checkpoint_every 1000 --no_progress "$@"
python evaluate.py --workdir "$workdir" --split test --iwae_samples 5000 --no_progress
