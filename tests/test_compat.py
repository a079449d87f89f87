"""Work directories written by jaxae 0.1 (before the redesign: flat config.json, the old
module layout) still load, sample, evaluate and resume with the same numbers.

The fixtures in tests/fixtures_v0_1/ were made with the 0.1 code (commit 77807bd; see
their README.md): two tiny MLP runs on mnist_5k (a VAE with an EMA, an AE with a fitted
2-component prior) and the numbers that code computed from them (expected.json).
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxae import evaluation, inputs, priors, sampling, workdir
from jaxae.training import train_and_evaluate

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures_v0_1")


@pytest.fixture(scope="module")
def expected():
    with open(os.path.join(FIXTURES, "expected.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["vae_mlp", "ae_mlp"])
def test_old_workdir_loads_samples_and_evaluates_identically(name, expected, mnist5k):
    want = expected[name]
    model, params, step = workdir.load_model(os.path.join(FIXTURES, name))
    assert step == want["step"]
    leaves = {jax.tree_util.keystr(p): np.asarray(v).reshape(-1)[:3]
              for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert set(leaves) == set(want["param_leaves_first3"])
    for path, values in want["param_leaves_first3"].items():
        np.testing.assert_array_equal(leaves[path], np.float32(values), err_msg=path)
    prior = priors.load(os.path.join(FIXTURES, name)) if want["used_fitted_prior"] else None
    samples = sampling.sample_prior(model, params, jax.random.key(0), 4, prior=prior)
    np.testing.assert_allclose(np.asarray(samples), np.float32(want["samples"]), rtol=0, atol=1e-6)
    _, _, test = mnist5k
    images = test.images[:64]
    assert int(images.astype(np.int64).sum()) == expected["eval_images"]["sum"]
    metrics = evaluation.evaluate(model, params, images, inputs.eval_key())
    assert set(metrics) == set(want["evaluate"])
    for key, value in want["evaluate"].items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-5), key


def test_old_workdir_resumes_to_the_same_numbers(expected, tfds_dir, tmp_path):
    run = tmp_path / "vae_mlp"
    shutil.copytree(os.path.join(FIXTURES, "vae_mlp"), run)
    config = workdir.load_config(str(run)).replace(data_dir=tfds_dir, steps=60)
    final = train_and_evaluate(config, str(run), progress=False)
    skip = set(expected["resume_final_nondeterministic_keys"])
    for key, value in expected["resume_final"].items():
        if key not in skip:
            assert final[key] == pytest.approx(value, abs=1e-4), key
    # The rewritten config.json is in sections, and loads back to the same config.
    with open(run / workdir.CONFIG_FILE) as f:
        assert set(json.load(f)) == {"data", "model", "objective", "optimizer", "run"}
    assert workdir.load_config(str(run)) == config
