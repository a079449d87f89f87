#!/usr/bin/env bash
# One run per model family on the embedded mnist_5k digits (offline, ~1-4 min each on 2 CPU
# cores), then evaluate.py with IWAE k=1000 on the 500 test digits and a sample grid each.
# Usage: benchmarks/quality/families_mnist5k.sh ROOT [extra train.py flags]
set -euo pipefail
root=${1:?usage: $0 ROOT [train.py flags]}; shift
declare -A flags=(
  [vae]="--model vae"
  [beta_vae]="--model beta_vae --beta 4 --kl_warmup_steps 1000"
  [iwae]="--model iwae --num_importance_samples 5"
  [iwae_2_layers]="--model iwae --num_importance_samples 5 --stochastic_layers 2 --hidden_dims 200,200 --latent_dim 100 --top_latent_dim 50 --top_hidden_dims 100,100 --activation tanh"
  [cvae]="--model cvae"
  [ae]="--model ae --code_l2 0.001 --latent_mixture 10"
  [denoising_ae]="--model ae --input_noise flip --noise_level 0.2 --latent_mixture 10"
)
for name in vae beta_vae iwae iwae_2_layers cvae ae denoising_ae; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  python train.py --workdir "$root/$name" --no_progress ${flags[$name]} "$@"
  echo "$name: train wall time $(( $(date +%s) - start )) s"
  python evaluate.py --workdir "$root/$name" --iwae_samples 1000 --no_progress
  python sample.py --workdir "$root/$name" --num_samples 64 --output "$root/$name/samples_grid.png"
done
