"""Trained models shipped inside the package, loadable offline.

Each lives in ``jaxae/pretrained_models/<name>/``: ``config.json`` and ``input_spec.json`` (as in
a work directory), ``params.npz`` (the evaluation parameters only — the moving average
when the run kept one — as plain arrays named by their tree path, read with
``allow_pickle=False``: nothing is ever unpickled), ``prior.npz`` when the family
samples from a fitted density, and ``card.json``: what the model is and the number it
reproduces (dataset, protocol, metric, value, the paper's number, command, hardware,
wall time, images seen).

    model, params = jaxae.load_pretrained("vae_burda_dynamic")
    python evaluate.py --pretrained NAME --num_images 100      # re-computes the card's metric
    python sample.py --pretrained NAME --num_samples 64
    python evaluate.py --list_pretrained
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import numpy as np

from jaxae import io
from jaxae import workdir as layout
from jaxae.config.schema import read_json
from jaxae.errors import ConfigError

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_models")
CARD_FILE = "card.json"
PARAMS_FILE = "params.npz"


@dataclasses.dataclass(frozen=True)
class Card:
    """What a shipped model is and what it reproduces.

    metric: the evaluate.py result key of the reported number (e.g. ``nll_iwae``);
    value: that number on ``split`` with ``iwae_samples`` importance samples, measured by
    evaluate.py on the shipped parameters; spot_check: ``num_images``, ``iwae_samples``
    and the ``nelbo`` / ``nll_iwae`` evaluate.py gives on the first images of ``split``,
    which a test re-computes in seconds; protocol: binarization, training split and
    bound, in words; paper / paper_value: the published number it stands next to.
    """

    name: str
    dataset: str
    protocol: str
    metric: str
    value: float
    split: str = "test"
    iwae_samples: int = 0
    paper: str = ""
    paper_value: float | None = None
    command: str = ""
    hardware: str = ""
    wall_time: str = ""
    images_seen: int = 0
    spot_check: dict | None = None  # evaluate.py's numbers on the split's first images (quick re-check).

    def line(self) -> str:
        """The tab-separated line ``evaluate.py --list_pretrained`` prints."""
        return "\t".join([self.name, self.dataset, self.protocol, self.metric, f"{self.value:.2f}"])


def names() -> list[str]:
    """The shipped models, sorted."""
    if not os.path.isdir(ROOT):
        return []
    return sorted(n for n in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, n, CARD_FILE)))


def path(name: str) -> str:
    """The folder of shipped model ``name``; ConfigError naming the known ones otherwise."""
    if name not in names():
        raise ConfigError(f"--pretrained {name!r} is not a shipped model; known: {', '.join(names()) or 'none'}")
    return os.path.join(ROOT, name)


def card(name: str) -> Card:
    d = read_json(os.path.join(path(name), CARD_FILE), "pretrained card")
    try:
        return Card(**d)
    except TypeError as e:
        raise ConfigError(f"pretrained card of {name!r} is malformed: {e}") from None


def flatten(params: Any) -> dict[str, np.ndarray]:
    """Params -> {tree path: array}, the form params.npz stores."""
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def save_params(file: str, params: Any) -> None:
    with io.atomic_path(file, suffix=".npz") as tmp:
        np.savez(tmp, **flatten(params))


def load_params(file: str, model) -> Any:
    """Reads params.npz into the structure ``model.init`` gives, checking every name, shape and dtype."""
    template = jax.eval_shape(model.init, jax.random.key(0))
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    stored = io.read_npz(file, "parameters")
    wanted = {jax.tree_util.keystr(p): leaf for p, leaf in paths}
    if set(stored) != set(wanted):
        raise ConfigError(f"parameters {file!r} do not fit the model: missing {sorted(set(wanted) - set(stored))}, "
                          f"unexpected {sorted(set(stored) - set(wanted))}")
    leaves = []
    for key, leaf in wanted.items():
        value = stored[key]
        if value.shape != leaf.shape:
            raise ConfigError(f"parameters {file!r}: {key} has shape {value.shape}, the model needs {leaf.shape}")
        leaves.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def load(name: str):
    """(model, params, config) of shipped model ``name``."""
    from jaxae.families import make_model

    folder = path(name)
    config = layout.load_config(folder)
    model = make_model(config, layout.load_input_spec(folder))
    return model, load_params(os.path.join(folder, PARAMS_FILE), model), config


def load_pretrained(name: str):
    """The model and parameters of shipped model ``name`` (see :func:`names`)."""
    model, params, _ = load(name)
    return model, params


def export(workdir: str, card_: Card, root: str = ROOT) -> str:
    """Copies a trained work directory's model into ``root/<card.name>/``: config,
    input spec, evaluation parameters, fitted prior and the card. Returns the folder."""
    from jaxae import priors

    model, params, _ = layout.load_model(workdir)
    folder = os.path.join(root, card_.name)
    os.makedirs(folder, exist_ok=True)
    # Where this machine kept the data means nothing elsewhere: the shipped config reads it from TFDS's default.
    layout.load_config(workdir).replace(data_dir=None, manual_dir=None).save(layout.config_path(folder))
    shutil.copyfile(os.path.join(workdir, layout.INPUT_SPEC_FILE), os.path.join(folder, layout.INPUT_SPEC_FILE))
    save_params(os.path.join(folder, PARAMS_FILE), params)
    if not model.has_prior and priors.load(workdir) is not None:
        shutil.copyfile(os.path.join(workdir, priors.PRIOR_FILE), os.path.join(folder, priors.PRIOR_FILE))
    io.write_text(os.path.join(folder, CARD_FILE), json.dumps(dataclasses.asdict(card_), indent=2) + "\n")
    return folder
