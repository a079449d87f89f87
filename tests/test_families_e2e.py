"""Every model family through train.py -> checkpoint -> sample.py and evaluate.py, and
sample.py's modes. The CLIs' main() runs in this process (test_cli.call; test_cli runs
each CLI once as a real process), on small networks and few steps; hvae on three of
hvae_mnist's resolutions (28, 7, 1) with one block and group each, narrowed (patched in
this process; the whole preset is slow to compile on a CPU, and tests/families/test_hvae.py
checks its shapes). (piwae, miwae, ciwae, infovae and the rae variants take the CLI paths
of iwae, vae and ae; their own tests in tests/families train and sample each through
train_and_evaluate.)"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_cli import call, one_line

from jaxae.config import HVAE_PRESETS

pytestmark = pytest.mark.slow

# 3 chunks of 20 steps: one compiled train call (chunks of two lengths would compile twice).
SHORT = ["--steps", "60", "--eval_every", "60", "--steps_per_call", "20", "--hidden_dims", "32", "--latent_dim", "4",
         "--no_progress"]
NARROW_HVAE = dict(HVAE_PRESETS["hvae_mnist"], width=16, bottleneck=8, stages=((28, 1, 1), (7, 1, 1), (1, 1, 1)))
HVAE_GROUPS = sum(groups for _, _, groups in NARROW_HVAE["stages"])
FAMILIES = {
    # The VAE with the beta-VAE's settings (one code path: beta = 1 is their default).
    "vae": ["--beta", "2.0", "--kl_warmup_steps", "20", "--free_bits", "0.05"],
    "iwae_2_layers": ["--stochastic_layers", "2", "--top_latent_dim", "3", "--top_hidden_dims", "16",
                      "--num_importance_samples", "3"],
    # Long enough (and a 2-d code, so the label carries the digit) for the class test below.
    "cvae": ["--steps", "300", "--eval_every", "300", "--hidden_dims", "64", "--latent_dim", "2",
             "--learning_rate", "0.003"],
    "ae": ["--code_l2", "0.001", "--input_noise", "flip", "--noise_level", "0.1", "--latent_mixture", "3"],
    "vamp": ["--vamp_components", "10"],                       # sample.py draws from the VampPrior
    "wae": ["--mmd_weight", "5"],                              # deterministic, sampled from N(0, I)
    # The smallest preset, 2 steps of 8 images: the conv hierarchy is slow to compile on a CPU.
    # Fewer images to encode (for the fitted prior) and evaluate keep its evaluations short.
    # With an IAF in every group's posterior (--group_iaf_steps), so its KLs are sampled.
    "hvae": ["--arch", "hvae_mnist", "--steps", "2", "--eval_every", "2", "--batch_size", "8",
             "--train_split", "train[:64]", "--eval_split", "test[:16]", "--group_iaf_steps", "1", "--iaf_hidden", "8"],
}
NO_BOUND = ("ae", "wae")    # Deterministic: reconstruction metrics, no likelihood bound.
MC_KL = ("vamp", "hvae")               # Their NELBO is a one-sample Monte Carlo estimate, not a closed form.


def _model(family):
    return "iwae" if family.startswith("iwae") else family


@pytest.fixture(scope="module", autouse=True)
def narrow_hvae():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(HVAE_PRESETS, "hvae_mnist", NARROW_HVAE)
        yield


@pytest.fixture(scope="module")
def trained_families(narrow_hvae, tfds_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    outputs = {}
    for family in FAMILIES:
        code, outputs[family], err = call("train.py", "--workdir", root / family, "--data_dir", tfds_dir,
                                          "--model", _model(family), *SHORT, *FAMILIES[family])
        assert code == 0, (family, err[-3000:])
    for family, out in outputs.items():
        assert f"training {_model(family)}/" in out and "final:" in out, (family, out)
        assert (root / family / "prior.npz").exists() and (root / family / "samples.png").exists()
    return {family: str(root / family) for family in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_samples_through_sample_py(trained_families, family, tmp_path):
    out = tmp_path / "s.npy"
    extra = []
    if family == "hvae":  # One temperature per latent group, coarsest first.
        extra = ["--temperature", ",".join(["1.0"] * (HVAE_GROUPS - 2) + ["0.5"] * 2)]
    code, stdout, err = call("sample.py", "--workdir", trained_families[family], "--num_samples", 20,
                             "--output", tmp_path / "s.png", "--save_array", out, *extra)
    assert code == 0, err[-3000:]
    images = np.load(out)
    assert images.shape == (20, 28, 28, 1)  # cvae: --label all by default, 2 per class
    assert 0 <= images.min() and images.max() <= 1 and np.isfinite(images).all()
    assert f"jaxae: {_model(family)} from step" in stdout


def test_hvae_temperature_list_must_match_its_groups(trained_families, tmp_path):
    code, _, err = call("sample.py", "--workdir", trained_families["hvae"], "--temperature", "1,1",
                        "--output", tmp_path / "x.png")
    assert code == 2 and "--temperature" in one_line(err)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_evaluates_through_evaluate_py(trained_families, tfds_dir, family):
    workdir = trained_families[family]
    code, stdout, err = call("evaluate.py", "--workdir", workdir, "--iwae_samples", 6, "--chunk", 3,
                             "--num_images", 8, "--batch_size", 8, "--no_progress")
    assert code == 0, err[-3000:]
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    assert report["num_images"] == 8 and report["devices"] == 4
    assert np.isfinite(report["recon"]) and report["mse"] > 0
    if family in NO_BOUND:
        assert "nll_iwae" not in report and "nelbo" not in report and report["recon"] > 0
    else:
        assert report["iwae_samples"] == 6 and "nll_iwae(k=6)" in stdout
        assert report["nll_iwae"] < report["nelbo"] + (5.0 if family in MC_KL else 1e-3)
        assert report["bpd"] == pytest.approx(report["nelbo"] / (784 * np.log(2)))


def test_sample_py_modes(trained_families, tmp_path):
    vae = trained_families["vae"]
    for args, count in ((["--interpolate", "0", "5", "--frames", "7"], 7),
                        (["--traverse", "3", "--frames", "5"], 4 * 5),
                        (["--reconstruct", "16"], 32),
                        (["--prior", "fitted", "--num_samples", "9"], 9),
                        (["--temperature", "0.5", "--num_samples", "6"], 6)):
        out = tmp_path / "m.npy"
        code, _, err = call("sample.py", "--workdir", vae, "--output", tmp_path / "m.png", "--save_array", out, *args)
        assert code == 0, (args, err[-2000:])
        assert np.load(out).shape == (count, 28, 28, 1), args
    cvae = trained_families["cvae"]
    code, _, err = call("sample.py", "--workdir", cvae, "--label", "7", "--num_samples", 5, "--output",
                        tmp_path / "c.png", "--save_array", tmp_path / "c.npy")
    assert code == 0 and np.load(tmp_path / "c.npy").shape == (5, 28, 28, 1), err
    # An ae samples from the density fitted to its codes (its default).
    code, _, err = call("sample.py", "--workdir", trained_families["ae"], "--num_samples", 4, "--output",
                        tmp_path / "a.png", "--save_array", tmp_path / "a.npy")
    assert code == 0 and np.load(tmp_path / "a.npy").shape == (4, 28, 28, 1), err
    # Fewer than 8 images make one row of that many: (28 + 2) * n + 2 pixels wide, upscaled 2x.
    assert Image.open(tmp_path / "a.png").size == (2 * (30 * 4 + 2), 2 * (30 + 2))
    # Denoising: a noisy .npy in, clean reconstructions out.
    noisy = np.clip(np.random.default_rng(0).random((3, 28, 28, 1)), 0, 1).astype(np.float32)
    np.save(tmp_path / "noisy.npy", noisy)
    code, _, err = call("sample.py", "--workdir", trained_families["ae"], "--denoise", tmp_path / "noisy.npy",
                        "--output", tmp_path / "d.png", "--save_array", tmp_path / "d.npy")
    assert code == 0, err[-2000:]
    assert np.load(tmp_path / "d.npy").shape == (3, 28, 28, 1)
    assert Image.open(tmp_path / "d.png").size == (2 * (30 * 3 + 2), 2 * (30 + 2))


@pytest.mark.parametrize("args,message", [
    (["--label", "11"], "--label '11' is not a class of this model: use 0..9 or all"),
    (["--interpolate", "0", "99999"], "test image index 99999 is out of range 0..499"),
    (["--reconstruct", "4", "--traverse", "1"], "use at most one of"),
    (["--denoise", "/no/such.npy"], "--denoise '/no/such.npy' is not a file"),
])
def test_bad_sample_modes(trained_families, tmp_path, args, message):
    code, _, err = call("sample.py", "--workdir", trained_families["cvae"], "--output", tmp_path / "x.png", *args)
    assert code == 2
    assert message in one_line(err)
    assert not (tmp_path / "x.png").exists()


def test_label_on_unconditional_model_is_refused(trained_families, tmp_path):
    code, _, err = call("sample.py", "--workdir", trained_families["vae"], "--label", "3",
                        "--output", tmp_path / "x.png")
    assert code == 2 and "needs a class-conditional model" in one_line(err)


def test_cvae_samples_are_the_requested_digit(trained_families, mnist5k):
    """After a short run on real digits, cvae samples for label c are nearest to class c's mean image.

    The nearest-class-mean classifier itself gets 84% of the real test digits right and
    chance is 10%; the samples must score above 60% (this small run scores about 85%).
    """
    from jaxae import sampling
    from jaxae.workdir import load_model

    model, params, step = load_model(trained_families["cvae"])
    assert step == 300
    _, train, _ = mnist5k
    means = np.stack([train.images[train.labels == c].mean(0) / 255.0 for c in range(10)])   # (10, 28, 28, 1)
    labels = jnp.repeat(jnp.arange(10), 30)
    samples = np.asarray(sampling.sample_prior(model, params, jax.random.key(0), 300, 1.0, labels))
    dist = ((samples[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    accuracy = float((dist.argmin(1) == np.asarray(labels)).mean())
    assert accuracy > 0.6, accuracy
