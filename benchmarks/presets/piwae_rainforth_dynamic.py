"""PIWAE(M = 8, K = 8) (Rainforth et al. 2018): miwae_rainforth_dynamic's protocol with the
encoder trained on MIWAE(8, 8) and the decoder on IWAE_64. pythae: 84.58 (paper: 84.46).
jaxae: not yet measured."""

import os
import runpy

_MIWAE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "miwae_rainforth_dynamic.py"))
get_evaluation = _MIWAE["get_evaluation"]


def get_config():
    return dict(_MIWAE["get_config"](), model="piwae")
