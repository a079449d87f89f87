"""MIWAE(M = 8, K = 8) (Rainforth et al. 2018) on dynamically binarized MNIST, as pythae
reproduces it:
Burda et al.'s one-stochastic-layer MLP 784-200-200-50 (tanh) and schedule (batch 20, Adam
with epsilon 1e-4, lr 1e-3 * 10^(-i/7) for 3^i epochs, 3,280 epochs), the IWAE bound with
k = 5,000 on the 10,000 test digits. pythae: 85.09 (paper: 84.97). Here on Row 1's
splits (vae_burda_schedule: 59,600 training digits, 400 held out; pythae trains on all
60,000). jaxae: not yet measured."""

import os
import runpy

_SCHEDULE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae_burda_schedule.py"))
get_evaluation = _SCHEDULE["get_evaluation"]


def get_config():
    return dict(_SCHEDULE["get_config"](), model="miwae", miwae_m=8, num_importance_samples=8)
