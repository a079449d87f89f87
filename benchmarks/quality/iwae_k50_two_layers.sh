#!/usr/bin/env bash
# IWAE with k=50 and Burda et al. (2015)'s two stochastic layers (784-200-200-z1(100)-100-100-z2(50),
# tanh), Bernoulli likelihood, static binarized MNIST; tuned on `validation`, reported on `test`.
# Burda et al. train 3,280 epochs (batch 20); this trains until BUDGET seconds of wall time
# (default: no limit, 10M steps) and stops gracefully with a checkpoint; rerun to resume.
# Usage: [BUDGET=SECONDS] benchmarks/quality/iwae_k50_two_layers.sh WORKDIR [train.py flags, e.g. --manual_dir DIR]
set -uo pipefail
workdir=${1:?usage: $0 WORKDIR [train.py flags]}; shift
limit=()
if [[ -n "${BUDGET:-}" ]]; then limit=(timeout -s INT "$BUDGET"); fi
"${limit[@]}" python train.py --workdir "$workdir" --dataset binarized_mnist --eval_split validation \
  --model iwae --num_importance_samples 50 --stochastic_layers 2 --arch mlp_burda --latent_dim 100 \
  --top_latent_dim 50 --batch_size 100 --learning_rate 1e-3 --steps 10000000 --eval_every 10000 \
  --checkpoint_every 2000 --keep_checkpoints 2 --no_progress "$@"
python evaluate.py --workdir "$workdir" --split test --iwae_samples 5000 --batch_size 500 --chunk 1000 --no_progress
