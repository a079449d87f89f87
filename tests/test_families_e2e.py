"""Every model family through train.py -> checkpoint -> sample.py, and sample.py's modes."""


import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import run

pytestmark = pytest.mark.slow

FAMILIES = {
    "vae": [],
    "iwae_2_layers": ["--stochastic_layers", "2", "--top_latent_dim", "3", "--top_hidden_dims", "16",
                      "--num_importance_samples", "3"],
    "beta_vae": ["--beta", "2.0", "--kl_warmup_steps", "20", "--free_bits", "0.05"],
    "iwae": ["--num_importance_samples", "5"],
    "cvae": [],
    "ae": ["--code_l2", "0.001", "--input_noise", "flip", "--noise_level", "0.1", "--latent_mixture", "3"],
}
SHORT = ["--steps", "60", "--eval_every", "60", "--hidden_dims", "64", "--latent_dim", "4", "--no_progress"]


@pytest.fixture(scope="module")
def trained_families(tfds_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    workdirs = {}
    for family, flags in FAMILIES.items():
        workdir = root / family
        model = "iwae" if family.startswith("iwae") else family
        result = run("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--model", model, *SHORT, *flags)
        assert result.returncode == 0, (family, result.stderr[-3000:])
        assert (workdir / "prior.npz").exists() and (workdir / "samples.png").exists()
        workdirs[family] = str(workdir)
    return workdirs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_samples_through_sample_py(trained_families, family, tmp_path):
    out = tmp_path / "s.npy"
    result = run("sample.py", "--workdir", trained_families[family], "--num_samples", 20,
                 "--output", tmp_path / "s.png", "--save_array", out)
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.load(out)
    assert images.shape == (20, 28, 28, 1)  # cvae: --label all by default, 2 per class
    assert 0 <= images.min() and images.max() <= 1
    assert family.split("_2")[0] in result.stdout


def test_sample_py_modes(trained_families, tmp_path):
    vae = trained_families["vae"]
    for args, count in ((["--interpolate", "0", "5", "--frames", "7"], 7),
                        (["--traverse", "3", "--frames", "5"], 4 * 5),
                        (["--reconstruct", "16"], 32),
                        (["--prior", "fitted", "--num_samples", "9"], 9),
                        (["--temperature", "0.5", "--num_samples", "6"], 6)):
        out = tmp_path / "m.npy"
        result = run("sample.py", "--workdir", vae, "--output", tmp_path / "m.png", "--save_array", out, *args)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        assert np.load(out).shape == (count, 28, 28, 1), args
    cvae = trained_families["cvae"]
    result = run("sample.py", "--workdir", cvae, "--label", "7", "--num_samples", 5, "--output",
                 tmp_path / "c.png", "--save_array", tmp_path / "c.npy")
    assert result.returncode == 0 and np.load(tmp_path / "c.npy").shape == (5, 28, 28, 1)
    # Denoising: a noisy .npy in, clean reconstructions out.
    noisy = np.clip(np.random.default_rng(0).random((3, 28, 28, 1)), 0, 1).astype(np.float32)
    np.save(tmp_path / "noisy.npy", noisy)
    result = run("sample.py", "--workdir", trained_families["ae"], "--denoise", tmp_path / "noisy.npy",
                 "--output", tmp_path / "d.png", "--save_array", tmp_path / "d.npy")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(tmp_path / "d.npy").shape == (3, 28, 28, 1)


@pytest.mark.parametrize("args,message", [
    (["--label", "11"], "--label '11' is not a class of this model: use 0..9 or all"),
    (["--interpolate", "0", "99999"], "test image index 99999 is out of range 0..499"),
    (["--reconstruct", "4", "--traverse", "1"], "use at most one of"),
])
def test_bad_sample_modes(trained_families, tmp_path, args, message):
    result = run("sample.py", "--workdir", trained_families["cvae"], "--output", tmp_path / "x.png", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x.png").exists()


def test_label_on_unconditional_model_is_refused(trained_families, tmp_path):
    result = run("sample.py", "--workdir", trained_families["vae"], "--label", "3", "--output", tmp_path / "x.png")
    assert result.returncode == 2 and "needs a class-conditional model" in result.stderr


def test_cvae_samples_are_the_requested_digit(tfds_dir, tmp_path, mnist5k):
    """After a short run on real digits, cvae samples for label c are nearest to class c's mean image.

    The nearest-class-mean classifier itself gets 84% of the real test digits right and
    chance is 10%; the samples must score above 60%.
    """
    from jaxae import sampling, training
    from jaxae.checkpoints import load_model
    from jaxae.config import Config

    config = Config(model="cvae", latent_dim=4, data_dir=tfds_dir, steps=1500, eval_every=1500,
                    checkpoint_every=1500)
    training.train_and_evaluate(config, str(tmp_path), progress=False)
    model, params, _ = load_model(str(tmp_path))
    _, train, _ = mnist5k
    means = np.stack([train.images[train.labels == c].mean(0) / 255.0 for c in range(10)])   # (10, 28, 28, 1)
    labels = jnp.repeat(jnp.arange(10), 30)
    samples = np.asarray(sampling.sample_prior(model, params, jax.random.key(0), 300, 1.0, labels))
    dist = ((samples[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    accuracy = float((dist.argmin(1) == np.asarray(labels)).mean())
    assert accuracy > 0.6, accuracy


@pytest.mark.parametrize("family", ["iwae_2_layers", "ae", "cvae"])
def test_evaluate_py_on_families(trained_families, tfds_dir, family):
    import json

    workdir = trained_families[family]
    result = run("evaluate.py", "--workdir", workdir, "--iwae_samples", 20, "--num_images", 20, "--batch_size", 10,
                 "--no_progress")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    if family == "ae":
        assert "nll_iwae" not in report and report["recon"] > 0 and report["mse"] > 0
    else:
        assert report["nll_iwae"] < report["nelbo"]
