"""Row 1's protocol (vae_burda_dynamic) trained with Burda et al. (2015)'s own schedule:
batch 20, Adam with epsilon 1e-4, learning rate 1e-3 * 10^(-i/7) for 3^i epochs,
i = 0..7 (3,280 epochs)."""

import os
import runpy

_ROW1 = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae_burda_dynamic.py"))
get_evaluation = _ROW1["get_evaluation"]


def get_config():
    config = _ROW1["get_config"]()
    config.update(batch_size=20, adam_eps=1e-4, lr_schedule="burda", epochs=None, warmup_steps=0,
                  eval_every=100000, checkpoint_every=50000)
    return config
