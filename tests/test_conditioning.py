"""Conditioning on a low-resolution image (jaxae.conditioning, --condition lowres): the
pooling and PSNR by hand, the conditional NELBO of a flat family against numpy, the
decoder's dependence on x_low (planted weights make its mean the upsampled x_low), and
super-resolution through train.py -> evaluate.py -> sample.py --upscale with its errors."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_like
from PIL import Image
from test_cli import call, one_line

from jaxae import conditioning, evaluation, inputs, sampling
from jaxae.config import Config, validate
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model

SHAPE = (8, 8, 1)
BINARY = InputSpec(image_shape=SHAPE, num_classes=10, mode="binary")
TINY = dict(hidden_dims=(16,), latent_dim=3)


def random_params(model, seed):
    return random_like(jax.eval_shape(model.init, jax.random.key(0)), seed, 1.0)


def lowres_model(spec=BINARY, factor=4, **settings):
    return make_model(validate(Config.create(condition="lowres", lowres_factor=factor, **{**TINY, **settings})), spec)


def test_box_average_upsampling_and_psnr_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    x = np.concatenate([x, 2 * x], axis=-1)                                  # (1, 4, 4, 2)
    pooled = np.asarray(conditioning.box_average(jnp.asarray(x), 2))
    # Block (0, 0) holds 0, 1, 4, 5; (0, 1): 2, 3, 6, 7; (1, 0): 8, 9, 12, 13; (1, 1): 10, 11, 14, 15.
    np.testing.assert_allclose(pooled[0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(pooled[0, ..., 1], [[5.0, 9.0], [21.0, 25.0]])
    low = jnp.asarray([[[[0.2], [0.8]], [[1.0], [0.0]]]])                    # (1, 2, 2, 1)
    near = np.asarray(conditioning.upsample(low, (4, 4)))[0, ..., 0]
    np.testing.assert_allclose(near, [[0.2, 0.2, 0.8, 0.8]] * 2 + [[1.0, 1.0, 0.0, 0.0]] * 2, atol=1e-6)
    flat = np.asarray(conditioning.upsample(jnp.full((1, 2, 2, 1), 0.3), (8, 8), "cubic"))
    np.testing.assert_allclose(flat, 0.3, atol=1e-6)                          # Bicubic keeps a constant.
    a, b = np.zeros((2, 2, 2, 1), np.float32), np.zeros((2, 2, 2, 1), np.float32)
    b[0, 0, 0, 0] = 0.5                                                       # MSE 0.25 / 4 -> 10 log10(16).
    np.testing.assert_allclose(conditioning.psnr(a, b), [10 * np.log10(16.0), 100.0], rtol=1e-6)


def _mlp(layers, h):
    """numpy: Dense -> relu ... -> Dense of flax params {"Dense_i": {kernel, bias}}."""
    h = np.asarray(h, np.float64)
    for i in range(len(layers)):
        h = h @ np.asarray(layers[f"Dense_{i}"]["kernel"], np.float64) + np.asarray(layers[f"Dense_{i}"]["bias"])
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def test_conditional_nelbo_matches_numpy():
    """At random parameters, with a denoising corruption so that x_in != x: x_low is the
    2x2 box average of the clean x, appended (flattened) to the encoder's input and to z."""
    model = lowres_model(factor=2)
    params = random_params(model, seed=3)
    rng = np.random.default_rng(4)
    images = jnp.asarray(rng.random((5, *SHAPE)) < 0.4, jnp.uint8)
    keys = inputs.example_keys(jax.random.key(7), 5)
    prep = inputs.Preprocessing(BINARY, input_noise="flip", noise_level=0.3)
    batch = jax.jit(prep, static_argnums=2)({"image": images}, keys, True)
    assert not np.array_equal(batch["x"], batch["x_in"])
    terms = jax.jit(model.eval_terms)(params, batch, keys)

    x, x_in = np.asarray(batch["x"], np.float64), np.asarray(batch["x_in"], np.float64)
    low = x.reshape(5, 4, 2, 4, 2, 1).mean(axis=(2, 4)).reshape(5, -1)       # (5, 16)
    stats = _mlp(params["encoder"], np.concatenate([x_in.reshape(5, -1), low], axis=1))
    mean, logvar = stats[:, :3], stats[:, 3:]
    eps = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (3,)))(inputs.fold(keys, inputs.MODEL_FOLD)))
    z = mean + np.exp(0.5 * logvar) * eps
    logits = _mlp(params["decoder"], np.concatenate([z, low], axis=1)).reshape(5, *SHAPE)
    recon = np.sum(np.logaddexp(0.0, logits) - x * logits, axis=(1, 2, 3))    # Bernoulli -log p(x | logits)
    kl = 0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=1)
    np.testing.assert_allclose(terms["recon"], recon, rtol=1e-4)
    np.testing.assert_allclose(terms["nelbo"], recon + kl, rtol=1e-4)


@pytest.mark.parametrize("arch,layers", [("mlp", 2), ("conv", 1)])
def test_the_decoder_depends_on_x_low(arch, layers):
    model = lowres_model(arch=arch, channels=(4,), factor=2, stochastic_layers=layers, top_latent_dim=3,
                         top_hidden_dims=(8,))
    params = random_params(model, seed=5)
    z = jax.random.normal(jax.random.key(0), (1, model.prior_dim))
    low = jax.random.uniform(jax.random.key(1), (1, 4, 4, 1))
    jac = jax.jacfwd(lambda g: model.decode(params, z, g))(low)             # (1, 8, 8, 1, 1, 4, 4, 1)
    assert jac.shape == (1, *SHAPE, 1, 4, 4, 1) and np.all(np.isfinite(jac))
    # Every low-res pixel moves the output.
    assert np.min(np.max(np.abs(np.asarray(jac)).reshape(-1, 16), axis=0)) > 1e-4
    with pytest.raises(ValueError, match="needs the low-resolution image x_low"):
        model.decode(params, z, None)


def test_planted_decoder_mean_is_the_upsampled_x_low():
    """Decoder weights planted so that its mean is x_low nearest-upsampled, whatever z: samples
    with the same key and different x_low differ exactly in the blocks where the x_low differ."""
    spec = InputSpec(image_shape=SHAPE, num_classes=0, mode="grey")
    model = lowres_model(spec, factor=2, likelihood="gaussian", gaussian_scale=0.1, binarize="none")
    params = random_params(model, seed=6)
    upsampling = np.zeros((16, 64), np.float32)                              # x_low pixel -> its 2x2 block
    for i in range(8):
        for j in range(8):
            upsampling[(i // 2) * 4 + j // 2, i * 8 + j] = 1.0
    first = np.zeros((3 + 16, 16), np.float32)
    first[3:] = np.eye(16)                                                    # z ignored, relu(x_low) = x_low
    params["decoder"] = {"Dense_0": {"kernel": jnp.asarray(first), "bias": jnp.zeros(16)},
                         "Dense_1": {"kernel": jnp.asarray(upsampling), "bias": jnp.zeros(64)}}
    a = np.random.default_rng(0).random((1, 4, 4, 1)).astype(np.float32)
    b = a.copy()
    b[0, 1, 2, 0] = 1.0 - a[0, 1, 2, 0]
    draw = functools.partial(sampling.sample_prior, model, params, jax.random.key(3), 6, 1.0)
    out_a, out_b = np.asarray(draw(jnp.repeat(a, 6, axis=0))), np.asarray(draw(jnp.repeat(b, 6, axis=0)))
    np.testing.assert_allclose(out_a, np.repeat(np.asarray(conditioning.upsample(a, (8, 8))), 6, 0), atol=1e-6)
    changed = np.abs(out_a - out_b).max(axis=(0, 3)) > 0
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:6] = True                                                 # The block of x_low[1, 2].
    np.testing.assert_array_equal(changed, expected)
    # evaluate.py's PSNRs: this model's super-resolution is the nearest upsampling, so all three agree
    # with a numpy PSNR of x (grey levels k / 255) against its 2x2 block means repeated.
    images = np.random.default_rng(1).integers(0, 256, (3, *SHAPE)).astype(np.uint8)
    report = evaluation.evaluate_full(model, params, images, inputs.eval_key(), iwae_samples=0, batch_size=4)
    x = images / 255.0
    near = x.reshape(3, 4, 2, 4, 2, 1).mean(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    want = np.mean(-10 * np.log10(np.mean((near - x) ** 2, axis=(1, 2, 3))))
    for key in ("psnr_nearest", "psnr_mean", "psnr_sample"):
        assert report[key] == pytest.approx(want, rel=1e-5), key
    assert report["psnr_bicubic"] != pytest.approx(want, rel=1e-3) and report["conditional_on"].startswith("x_low")


def test_posterior_samples_take_x_low_from_the_clean_image():
    """With a corrupted encoder input (denoising), q(z | x_in, x_low) takes x_low from the clean x,
    as the training pass does: what infovae's and btcvae's posterior samples use."""
    model = lowres_model(model="infovae")
    params = random_params(model, 41)
    x = jnp.asarray(np.random.default_rng(42).random((3, *SHAPE)) < 0.4, jnp.float32)
    x_in = 1.0 - x
    batch = {"x": x, "x_in": x_in}
    keys = inputs.example_keys(jax.random.key(43), 3)
    z, mean, logvar = model.posterior_sample(params, batch, keys)
    encode = lambda given: model.net.apply({"params": params}, x_in, given, method=type(model.net).encode)  # noqa: E731
    want_mean, want_logvar = encode(conditioning.box_average(x, 4))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
    np.testing.assert_allclose(logvar, want_logvar, rtol=1e-6)
    assert np.max(np.abs(np.asarray(encode(conditioning.box_average(x_in, 4))[0] - mean))) > 1e-3
    np.testing.assert_allclose(z, mean + jnp.exp(0.5 * logvar) * model.noise(keys), rtol=1e-6)


@pytest.mark.parametrize("settings,message", [
    (dict(conditional=True, condition="lowres"), "cannot be combined with --condition lowres"),
    (dict(lowres_factor=3), "--lowres_factor 3 is used by --condition lowres only"),
    (dict(condition="lowres", lowres_factor=1), "--lowres_factor must be >= 2"),
    (dict(condition="lowres", lowres_factor=3), "--lowres_factor 3 must divide the image sides; got 8x8"),
    (dict(condition="lowres", model="cvae"), "--condition lowres is not available for --model cvae"),
    (dict(condition="upscaled"), "--condition 'upscaled' is not one of none, label, lowres"),
])
def test_bad_condition_settings_are_one_line_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_model(validate(Config.create(**{**TINY, **settings})), BINARY)


def test_a_family_that_says_supports_conditional_false_takes_no_condition(monkeypatch):
    """The older spelling (before ``conditions``) still refuses every condition."""
    from jaxae import families

    class Plain(families.VAE):
        supports_conditional = False

    monkeypatch.setitem(families.REGISTRY, "plain", Plain)
    for settings in (dict(condition="lowres"), dict(conditional=True)):
        with pytest.raises(ConfigError, match="is not available for --model plain"):
            families.check_config(validate(Config.create(model="plain", **settings)))


def test_label_conditioning_is_unchanged():
    """--conditional and --condition label are the same model, and old configs (no --condition) load."""
    old = make_model(validate(Config.create(conditional=True, **TINY)), BINARY)
    new = make_model(validate(Config.create(condition="label", **TINY)), BINARY)
    assert old == new and old.conditioning.kind == "label" and old.conditional
    old_cvae = Config.from_dict({"model": "cvae", "hidden_dims": [16], "latent_dim": 3})   # A 0.1-style flat config.
    assert old_cvae.model.condition == "none"
    cvae = make_model(old_cvae, BINARY)
    shapes = [jax.eval_shape(m.init, jax.random.key(0)) for m in (cvae, old)]
    assert cvae.conditioning == old.conditioning and shapes[0] == shapes[1]


@pytest.fixture(scope="module")
def trained_lowres(tfds_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lowres") / "run"
    code, out, err = call("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--condition", "lowres",
                          "--steps", "2", "--eval_every", "2", "--steps_per_call", "2", "--batch_size", "16",
                          "--hidden_dims", "16", "--latent_dim", "2", "--train_split", "train[:64]",
                          "--eval_split", "test[:16]", "--no_progress")
    assert code == 0, err[-3000:]
    assert (workdir / "samples.png").exists()      # Rows of samples, each under a test digit's x_low.
    return workdir


@pytest.mark.slow
def test_upscale_through_train_evaluate_and_sample(trained_lowres, tmp_path):
    code, out, err = call("evaluate.py", "--workdir", trained_lowres, "--iwae_samples", 0,
                          "--num_images", 8, "--batch_size", 8, "--no_progress")
    assert code == 0, err[-3000:]
    assert "-log p(x | c), c = x_low, the 4x4 box average of x (7x7x1)" in out and "PSNR against x" in out
    with open(trained_lowres / "eval_test.json") as f:
        report = json.load(f)
    assert report["conditional_on"].startswith("x_low")
    assert {"psnr_mean", "psnr_sample", "psnr_nearest", "psnr_bicubic"} <= set(report)
    low = (np.random.default_rng(0).random((7, 7)) * 255).astype(np.uint8)
    Image.fromarray(low).save(tmp_path / "low.png")
    code, out, err = call("sample.py", "--workdir", trained_lowres, "--upscale", tmp_path / "low.png",
                          "--num_samples", 5, "--output", tmp_path / "high.png", "--save_array", tmp_path / "high.npy")
    assert code == 0, err[-3000:]
    assert np.load(tmp_path / "high.npy").shape == (5, 28, 28, 1)
    with Image.open(tmp_path / "high.png") as im:     # One row: the input then 5 samples, 2 px gaps, 2x scale.
        assert im.size == (2 * (6 * 30 + 2), 2 * 32) and im.mode == "L"
        grid = np.asarray(im)
    np.testing.assert_array_equal(grid[4:60:8, 4:60:8], low)              # The first cell is the input, upsampled.


@pytest.mark.slow
def test_upscale_errors(trained_lowres, tmp_path):
    fixture_vae = os.path.join(os.path.dirname(__file__), "fixtures_v0_1", "vae_mlp")
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.zeros((8, 7), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "text.png").write_text("not an image")
    cases = [
        (trained_lowres, ["--upscale", tmp_path / "big.png"], "is 7x8 pixels; this model upscales 7x7 images"),
        (trained_lowres, ["--upscale", tmp_path / "rgb.png"], "is a RGB image; this model's images are grey"),
        (trained_lowres, ["--upscale", tmp_path / "none.png"], "is not a file"),
        (trained_lowres, ["--upscale", tmp_path / "text.png"], "is not a readable image"),
        (trained_lowres, [], "give one with --upscale LOW.png"),
        (trained_lowres, ["--label", "3"], "give one with --upscale LOW.png"),
        (fixture_vae, ["--upscale", tmp_path / "ok.png"], "--upscale needs a model trained with --condition lowres"),
    ]
    for workdir, args, message in cases:
        code, _, err = call("sample.py", "--workdir", workdir, "--output", tmp_path / "x.png", *args)
        assert code == 2 and message in one_line(err), (args, err)
    assert not (tmp_path / "x.png").exists()
