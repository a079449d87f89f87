#!/usr/bin/env bash
# Hierarchical VAE on CIFAR-10 (--arch hvae_cifar, 22 latent groups from 1x1 to 32x32, 9.4M
# parameters), discretized mixture of 10 logistics (exact 8-bit likelihood, bits/dim),
# random horizontal flips. Protocol: train on train[:45000], tune on train[45000:], report on
# `test`. Trains until BUDGET seconds of wall time (default: no limit) and stops gracefully
# with a checkpoint; rerun to resume. PRESET=hvae_cifar_small for a CPU-sized model.
# Usage: [BUDGET=SECONDS] [PRESET=hvae_cifar] benchmarks/quality/hvae_cifar.sh WORKDIR [train.py flags]
# e.g. --dataset cifar10_binary --manual_dir DIR (the extracted official binary release, offline)
set -uo pipefail
workdir=${1:?usage: $0 WORKDIR [train.py flags]}; shift
limit=()
if [[ -n "${BUDGET:-}" ]]; then limit=(timeout -s INT "$BUDGET"); fi
"${limit[@]}" python train.py --workdir "$workdir" --dataset cifar10 --train_split 'train[:45000]' \
  --eval_split 'train[45000:]' --model hvae --arch "${PRESET:-hvae_cifar}" --likelihood logistic_mixture \
  --binarize none --hflip --batch_size 32 --learning_rate 5e-4 --warmup_steps 100 --ema_decay 0.999 \
  --grad_clip 200 --steps 10000000 --eval_every 5000 --checkpoint_every 1000 --keep_checkpoints 2 \
  --no_progress "$@"
python evaluate.py --workdir "$workdir" --split test --iwae_samples 20 --batch_size 50 --chunk 10 --no_progress
