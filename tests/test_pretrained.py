"""Models shipped in jaxae/pretrained_models/: listed, loaded without unpickling, sampled,
and re-evaluated to the numbers on their cards."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxae import data, evaluation, inputs, pretrained, sampling
from jaxae.config import DataConfig
from jaxae.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
NAMES = pretrained.names()


def test_at_least_one_model_is_shipped_and_listed_one_line_each():
    assert NAMES
    out = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--list_pretrained"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == NAMES
    for line, name in zip(lines, NAMES):
        card = pretrained.card(name)
        fields = line.split("\t")
        assert fields == [name, card.dataset, card.protocol, card.metric, f"{card.value:.2f}"]


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_model_loads_and_samples(name):
    model, params = pretrained.load_pretrained(name)
    template = jax.eval_shape(model.init, jax.random.key(0))
    assert jax.tree.structure(template) == jax.tree.structure(params)
    images = sampling.sample_prior(model, params, jax.random.key(0), 8)
    assert images.shape == (8, *model.spec.image_shape)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


def test_unknown_or_damaged_shipped_models_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="is not a shipped model; known: "):
        pretrained.load_pretrained("no_such_model")
    name = NAMES[0]
    model, params = pretrained.load_pretrained(name)
    flat = pretrained.flatten(params)
    key = sorted(flat)[0]
    bad = tmp_path / "params.npz"
    np.savez(bad, **{k: v for k, v in flat.items() if k != key})
    with pytest.raises(ConfigError, match="do not fit the model: missing"):
        pretrained.load_params(str(bad), model)
    np.savez(bad, **dict(flat, **{key: np.zeros((1, 2, 3), np.float32)}))
    with pytest.raises(ConfigError, match="has shape"):
        pretrained.load_params(str(bad), model)
    np.savez(bad, **dict(flat, **{key: np.array([object()], dtype=object)}))
    with pytest.raises(ConfigError, match="not a readable .npz"):
        pretrained.load_params(str(bad), model)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_model_re_evaluates_to_its_spot_check(name, tmp_path_factory):
    """The card's numbers on the first images of its split, from the real data in ../shared."""
    card = pretrained.card(name)
    manual = os.path.join(SHARED, card.dataset)
    if not os.path.isdir(manual):
        pytest.skip(f"{manual} is not on this machine")
    model, params, config = pretrained.load(name)
    source = DataConfig(dataset=card.dataset, manual_dir=manual, data_dir=str(tmp_path_factory.mktemp("tfds")))
    split = data.load_split(data.prepared_builder(source), card.split)
    spot = card.spot_check
    got = evaluation.evaluate_full(model, params, split.images[:spot["num_images"]], inputs.eval_key(),
                                   iwae_samples=spot["iwae_samples"], batch_size=spot["num_images"],
                                   chunk=spot["iwae_samples"])
    assert got["nelbo"] == pytest.approx(spot["nelbo"], abs=1e-3)
    assert got["nll_iwae"] == pytest.approx(spot["nll_iwae"], abs=1e-3)
