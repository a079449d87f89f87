"""CIWAE(beta = 0.05, K = 64) (Rainforth et al. 2018) with miwae_rainforth_dynamic's protocol
(Burda et al.'s network and schedule on dynamically binarized MNIST, IWAE bound k = 5,000).
beta as pythae's results table labels the run (its config file says 0.5), K = 64 from that
config. pythae: 84.74 (paper: 84.57). jaxae: not yet measured."""

import os
import runpy

_SCHEDULE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae_burda_schedule.py"))
get_evaluation = _SCHEDULE["get_evaluation"]


def get_config():
    return dict(_SCHEDULE["get_config"](), model="ciwae", ciwae_beta=0.05, num_importance_samples=64)
