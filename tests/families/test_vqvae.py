"""The VQ-VAE (jaxae.families.vqvae): nearest-neighbour quantization, the straight-through
gradient, the codebook/commitment/prior terms against numpy at random parameters, the
PixelCNN prior's causality, autoregressive sampling, and train.py -> sample.py ->
evaluate.py on a tiny model."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from family_helpers import BINARY, binary_images, cross_entropy, f64, random_params
from test_cli import call

from conftest import random_like
from jaxae import inputs, sampling, training
from jaxae.conditioning import box_average
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.vqvae import VQVAE, ema_codebook, quantize, straight_through
from jaxae.nets.conv import with_condition_channels
from jaxae.nets.pixelcnn import PixelCNN

# 6 x 6 images, one stride-2 stage: a 3 x 3 grid of 3-vectors, 5 codebook entries.
TINY = dict(model="vqvae", arch="conv", channels=(4,), latent_dim=3, codebook_size=5, commitment=0.3,
            pixelcnn_layers=3, pixelcnn_channels=8)
BATCH = 6


def numpy_quantize(z, codebook):
    """numpy, brute force: argmin_k ||z - c_k||^2 for each vector of z (..., D), and c_k."""
    distances = np.sum((z[..., None, :] - codebook) ** 2, axis=-1)
    indices = np.argmin(distances, axis=-1)
    return indices, codebook[indices]


def log_softmax(logits):
    return logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnums=0)
def pieces(model, params, x, keys):
    """One compiled call: the encoder's grid z_e, its nearest entries e and indices (brute force),
    the decoder's probabilities at e and the prior's logits at the indices, the library's
    loss, eval terms and gradients, and the encoder gradient the straight-through estimator
    should give: the VJP of the encoder with dL/dz_e = (1/B) d recon / d z_q at z_q = e +
    (commitment / B) 2 (z_e - e)."""
    batch = {"x": x, "x_in": x}
    loss_fn = lambda p: model.loss(p, batch, keys)  # noqa: E731
    z_e, vjp = jax.vjp(lambda enc: model.net.encoder.apply({"params": enc}, x), params["encoder"])
    codebook = params["codebook"]
    indices = jnp.argmin(jnp.sum(jnp.square(z_e[..., None, :] - codebook), -1), -1)
    e = codebook[indices]

    def recon(z_q):
        out = model.net.decoder.apply({"params": params["decoder"]}, z_q)
        return -jnp.mean(model.likelihood.log_prob(out, x))

    (encoder_grad,) = vjp(jax.grad(recon)(e) + model.commitment * 2.0 * (z_e - e) / x.shape[0])
    return dict(z_e=z_e, e=e, indices=indices, probs=model.decode(params, e.reshape(x.shape[0], -1)),
                logits=model.prior_logits(params, indices), loss=loss_fn(params),
                grads=jax.grad(lambda p: loss_fn(p)[0])(params), terms=model.eval_terms(params, batch, keys),
                encoder_grad=encoder_grad)


@pytest.fixture(scope="module")
def case():
    model = make_model(Config.create(**TINY), BINARY)
    params = random_params(model, seed=21, scale=0.8)
    x, keys = binary_images(BATCH, seed=22), inputs.example_keys(jax.random.key(23), BATCH)
    # Entries near 5 of the encoder's vectors, so that several are in use.
    z_e = jax.jit(model.net.encoder.apply)({"params": params["encoder"]}, x).reshape(-1, 3)
    params["codebook"] = z_e[::11][:5] + 0.1 * jax.random.normal(jax.random.key(25), (5, 3))
    return model, params, x, f64(pieces(model, params, x, keys))


def test_quantize_picks_the_nearest_entry():
    codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z = jnp.array([[0.4, 0.1], [0.6, 0.0], [0.4, 1.2], [0.5, 0.0], [-3.0, 5.0]])
    # ||z - c||^2 by hand: [0.17, 0.37, 3.77], [0.36, 0.16, 4.36], [1.6, 1.8, 0.8], [0.25, 0.25, 4.25] (a tie:
    # the lower index), [34, 41, 18].
    indices, entries = quantize(z, codebook)
    assert indices.tolist() == [0, 1, 2, 0, 2]
    np.testing.assert_array_equal(entries, codebook[np.array([0, 1, 2, 0, 2])])
    rng = np.random.default_rng(0)
    z, codebook = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((7, 3))
    indices, entries = quantize(jnp.asarray(z), jnp.asarray(codebook))
    expected, expected_entries = numpy_quantize(z, codebook)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(entries, expected_entries, rtol=1e-6)
    assert len(set(expected.ravel())) > 3


def test_straight_through_passes_the_quantized_vectors_gradient_to_z_e():
    rng = np.random.default_rng(1)
    z_e, e, w = (jnp.asarray(rng.standard_normal((2, 3, 3, 4))) for _ in range(3))
    f = lambda z: jnp.sum(jnp.sin(z) * w) + jnp.sum(z ** 3)  # noqa: E731
    np.testing.assert_allclose(f(straight_through(z_e, e)), f(e), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(lambda z: f(straight_through(z, e)))(z_e), jax.grad(f)(e), rtol=1e-5)


def test_encoder_gradient_is_the_decoders_gradient_at_e_plus_the_commitment(case):
    """d loss / d encoder = the VJP of the encoder with dL/dz_e = (1/B) d recon / d z_q at z_q = e
    + (commitment / B) 2 (z_e - e) (``pieces``): the codebook and prior terms send it nothing."""
    _, _, _, p = case
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6),
                 p["grads"]["encoder"], p["encoder_grad"])


def test_loss_terms_match_numpy_at_random_parameters(case):
    """loss = mean_b [-log p(x|e) + ||z_e - e||^2 + commitment ||z_e - e||^2 - sum_i log p(k_i | k_<i)],
    e, k the nearest entries (brute force), the prior's logits those of the library's PixelCNN at k."""
    model, params, x, p = case
    indices, e = numpy_quantize(p["z_e"], np.asarray(params["codebook"], np.float64))
    np.testing.assert_array_equal(p["indices"], indices)
    assert len(set(indices.ravel())) >= 3                    # Several entries in use: the argmin matters.
    recon = cross_entropy(p["probs"], x)
    squared = np.sum((p["z_e"] - e) ** 2, axis=(1, 2, 3))
    prior_nll = -np.sum(np.take_along_axis(log_softmax(p["logits"]), indices[..., None], -1), axis=(1, 2, 3))
    loss, scalars = p["loss"]
    np.testing.assert_allclose(loss, np.mean(recon + 1.3 * squared + prior_nll), rtol=1e-5)
    for name, want in (("recon", recon), ("codebook", squared), ("commitment", squared), ("prior_nll", prior_nll),
                       ("nelbo", recon + prior_nll)):
        np.testing.assert_allclose(scalars[name], np.mean(want), rtol=1e-5, err_msg=name)
    usage = np.bincount(indices.ravel(), minlength=5) / indices.size
    entropy = -np.sum(usage[usage > 0] * np.log(usage[usage > 0]))
    np.testing.assert_allclose(scalars["perplexity"], np.exp(entropy), rtol=1e-5)
    assert scalars["codes_used"] == np.sum(usage > 0) < 5
    terms, ln2 = p["terms"], np.log(2.0)
    np.testing.assert_allclose(terms["nelbo"], recon + prior_nll, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], prior_nll, rtol=1e-5)
    np.testing.assert_allclose(terms["recon_bpd"], recon / (36 * ln2), rtol=1e-5)
    np.testing.assert_allclose(terms["prior_bpd"], prior_nll / (36 * ln2), rtol=1e-5)
    np.testing.assert_allclose(terms["prior_bits_per_code"], prior_nll / (9 * ln2), rtol=1e-5)


def test_codebook_gradient_comes_from_the_codebook_term_only(case):
    """d loss / d c_k = (2 / B) sum over the positions quantized to k of (c_k - z_e): not from the
    reconstruction (straight-through), the commitment (sg[e]) or the prior (integer input)."""
    _, params, _, p = case
    codebook = np.asarray(params["codebook"], np.float64)
    indices, e = numpy_quantize(p["z_e"], codebook)
    expected = np.zeros_like(codebook)
    np.add.at(expected, indices.ravel(), 2.0 * (e - p["z_e"]).reshape(-1, 3) / BATCH)
    np.testing.assert_allclose(p["grads"]["codebook"], expected, rtol=1e-4, atol=1e-6)


def test_pixelcnn_is_causal_without_a_blind_spot():
    """d logits(i) / d one_hot(j) is exactly 0 for every j >= i in raster order, and nonzero for
    every j < i (3 gated layers see the whole past of a 3 x 4 grid)."""
    net = PixelCNN(num_codes=5, channels=8, num_layers=3)
    one_hot = jax.nn.one_hot(jnp.asarray(np.random.default_rng(2).integers(0, 5, (1, 3, 4))), 5)
    params = random_like(jax.eval_shape(net.init, jax.random.key(0), one_hot), 3, 1.0)
    jacobian = jax.jit(jax.jacobian(lambda o: net.apply(params, o)[0]))(one_hot)[:, :, :, 0]   # (3, 4, 5, 3, 4, 5)
    depends = np.asarray(jnp.any(jacobian != 0, axis=(2, 5))).reshape(12, 12)               # [i, j]
    earlier = np.tril(np.ones((12, 12), bool), k=-1)
    assert not depends[~earlier].any()
    assert depends[earlier].all()


@functools.partial(jax.jit, static_argnums=0)
def sampled(model, params, rng):
    """What the sampling test compares, in one compiled call: 7 code grids at temperature 0.7 and
    at 1e-4, the prior's logits of each, the categorical draws code i should be (from the
    finished grid's logits at i and fold_in(rng, i)), prior_draws and sample_prior's images."""
    codes, cold = model.sample_codes(params, rng, 7, 0.7), model.sample_codes(params, rng, 7, 1e-4)
    logits = model.prior_logits(params, codes)                                          # (7, 3, 3, 5)
    expected = jnp.stack([jax.random.categorical(jax.random.fold_in(rng, i), logits[:, i // 3, i % 3] / 0.7)
                          for i in range(9)], axis=1).reshape(7, 3, 3)
    draws = model.prior_draws(params, rng, 7, 0.7)
    return dict(codes=codes, expected=expected, cold=cold, cold_argmax=jnp.argmax(model.prior_logits(params, cold), -1),
                draws=draws, from_codebook=params["codebook"][codes].reshape(7, -1),
                images=sampling.sample_prior(model, params, rng, 7, 0.7), decoded=model.decode(params, draws))


def test_sampling_draws_each_code_from_the_prior_given_the_earlier_codes(case):
    """Code i = categorical(fold_in(rng, i), logits_i / T), the logits those of the finished grid
    (causal: the same as when code i was drawn); at a low temperature the argmax. prior_draws
    are the codes' codebook vectors, and sample_prior decodes them."""
    model, params, _, _ = case
    s = sampled(model, params, jax.random.key(24))
    np.testing.assert_array_equal(s["codes"], s["expected"])
    assert len(np.unique(np.asarray(s["codes"]))) > 1
    np.testing.assert_array_equal(s["cold"], s["cold_argmax"])
    np.testing.assert_array_equal(s["draws"], s["from_codebook"])
    np.testing.assert_allclose(s["images"], s["decoded"], atol=1e-6)


def test_ema_codebook_by_hand():
    """N' = g N + (1 - g) n and e' = (g N e + (1 - g) s) / N'; an unused entry keeps its vector."""
    codebook = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    count = np.array([2.0, 0.5, 1.0])
    assigned, sums = np.array([3.0, 1.0, 0.0]), np.array([[3.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    new_codebook, new_count = ema_codebook(jnp.asarray(codebook), jnp.asarray(count), jnp.asarray(assigned),
                                           jnp.asarray(sums), 0.9)
    np.testing.assert_allclose(new_count, [0.9 * 2 + 0.1 * 3, 0.9 * 0.5 + 0.1, 0.9])
    np.testing.assert_allclose(new_codebook[0], (0.9 * 2 * np.array([1.0, 2.0]) + 0.1 * np.array([3.0, 3.0])) / 2.1,
                               rtol=1e-6)
    np.testing.assert_allclose(new_codebook[1], (0.45 * np.array([3.0, -1.0]) + 0.1 * np.array([1.0, 1.0])) / 0.55,
                               rtol=1e-6)
    np.testing.assert_array_equal(new_codebook[2], codebook[2].astype(np.float32))


def _ema_model_and_state(decay=0.8):
    model = make_model(Config.create(**TINY, codebook_ema=decay), BINARY)
    optimizer = training.make_optimizer(Config.create(**TINY).optimizer, 100)
    state = training.create_train_state(model, optimizer, jax.random.key(30))
    params = dict(random_params(model, seed=31, scale=0.8))
    x = binary_images(8, seed=32)
    z_e = jax.jit(model.net.encoder.apply)({"params": params["encoder"]}, x).reshape(-1, 3)
    params["codebook"] = z_e[::13][:5] + 0.1 * jax.random.normal(jax.random.key(33), (5, 3))
    params["codebook"] = params["codebook"].at[4].set(100.0)                   # Far from every output: unused.
    params["codebook_count"] = jnp.array([0.5, 1.0, 2.0, 3.0, 4.0])
    return model, optimizer, state.replace(params=params), x


def test_ema_train_step_moves_the_codebook_by_its_assignments_and_the_rest_by_adam():
    """One train step with --codebook_ema 0.8: the codebook and its counts are the EMA update
    (numpy, brute-force nearest entries of the step's encoder outputs under the old params);
    Adam moves the other parameters; the loss drops the codebook term."""
    model, optimizer, state, x = _ema_model_and_state()
    step = jax.jit(training.make_train_step(model, optimizer))
    batch = {"image": x.astype(jnp.uint8)}                                     # binary mode: 0/1 pixels
    after, metrics = step(state, batch, jax.random.key(34))
    params = f64(state.params)
    z_e = np.asarray(jax.jit(model.net.encoder.apply)({"params": state.params["encoder"]}, x), np.float64)
    indices, _ = numpy_quantize(z_e.reshape(-1, 3), params["codebook"])
    one_hot = np.eye(5)[indices]
    assigned, sums = one_hot.sum(0), one_hot.T @ z_e.reshape(-1, 3)
    assert np.count_nonzero(assigned[:4]) >= 3 and assigned[4] == 0
    count = 0.8 * params["codebook_count"] + 0.2 * assigned
    expected = (0.8 * params["codebook_count"][:, None] * params["codebook"] + 0.2 * sums) / count[:, None]
    np.testing.assert_allclose(after.params["codebook_count"], count, rtol=1e-6)
    np.testing.assert_allclose(after.params["codebook"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after.params["codebook"][4], state.params["codebook"][4])
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), after.params["encoder"], state.params["encoder"])
    assert min(jax.tree.leaves(moved)) > 0
    np.testing.assert_allclose(metrics["loss"], metrics["recon"] + 0.3 * metrics["commitment"] + metrics["prior_nll"],
                               rtol=1e-5)
    assert metrics["codebook"] > 0.01                                        # Still logged, not trained on.


def test_ema_update_under_pmap_sums_the_assignments_over_devices():
    """Under pmap (4 devices, 2 images each) the EMA update uses the whole batch's assignments:
    the codebook equals the one-device step's on the same 8 images."""
    model, optimizer, state, x = _ema_model_and_state()
    batch = {"image": x.astype(jnp.uint8)}                                     # binary mode: 0/1 pixels
    single, _ = jax.jit(training.make_train_step(model, optimizer))(state, batch, jax.random.key(35))
    pmap_step = jax.pmap(training.make_train_step(model, optimizer, axis_name=training.PMAP_AXIS),
                         axis_name=training.PMAP_AXIS, in_axes=(0, 0, None), devices=jax.devices()[:4])
    replicated = jax.tree.map(lambda a: jnp.stack([a] * 4), state)
    shards = jax.tree.map(lambda a: a.reshape(4, 2, *a.shape[1:]), batch)
    after, _ = pmap_step(replicated, shards, jax.random.key(35))
    for name in ("codebook", "codebook_count"):
        np.testing.assert_allclose(after.params[name][3], single.params[name], rtol=1e-5, atol=1e-6)


def test_condition_channels_by_hand():
    """A label joins every position as constant planes; x_low, nearest-resized and mapped to
    [-1, 1] as the images are."""
    h = jnp.arange(2 * 4 * 4, dtype=jnp.float32).reshape(2, 4, 4, 1)
    label = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = np.asarray(with_condition_channels(h, label))
    np.testing.assert_array_equal(out[..., :1], h)
    np.testing.assert_array_equal(out[:, 2, 3, 1:], label)
    np.testing.assert_array_equal(out[:, 0, 0, 1:], label)
    low = jnp.array([[[0.0, 0.5], [1.0, 0.25]]])[..., None]                            # (1, 2, 2, 1)
    out = np.asarray(with_condition_channels(h[:1], low))[0, :, :, 1]
    np.testing.assert_array_equal(out, 2.0 * np.kron([[0.0, 0.5], [1.0, 0.25]], np.ones((2, 2))) - 1.0)
    assert with_condition_channels(h, None) is h


@pytest.mark.parametrize("settings", [dict(conditional=True), dict(condition="lowres", lowres_factor=2)])
def test_conditioned_vqvae_gives_encoder_and_decoder_the_clean_images_condition(settings):
    """The terms at random parameters with a denoising input x_in != x: encoder(x_in, c) and
    decoder(e, c) with c from the clean x (the label one-hot, or x's 2x2 box average); the
    PixelCNN prior does not see c; the decoder does."""
    model = make_model(Config.create(**TINY, **settings), BINARY)
    assert model.conditional
    params = random_params(model, seed=26, scale=0.8)
    x = binary_images(4, seed=27)
    x_in, labels = 1.0 - x, jnp.array([1, 4, 4, 9])
    label = model.conditioning.kind == "label"
    cond = jax.nn.one_hot(labels, 10) if label else box_average(x, 2)
    given, other = (labels, jnp.array([2, 2, 2, 2])) if label else (box_average(x, 2), box_average(x_in, 2))

    @jax.jit
    def pieces(params):
        """One compiled call: the networks applied by hand (brute-force nearest entries, as
        numpy_quantize) and the library's numbers."""
        def codes(images):
            z_e = model.net.encoder.apply({"params": params["encoder"]}, images, cond)
            indices = jnp.argmin(jnp.sum(jnp.square(z_e[..., None, :] - params["codebook"]), -1), -1)
            return indices, params["codebook"][indices]

        def decoder(e):
            return model.net.decoder.apply({"params": params["decoder"]}, e, cond)

        indices, e = codes(x_in)
        logits = model.net.prior.apply({"params": params["prior"]}, jax.nn.one_hot(indices, 5))
        v = e.reshape(4, -1)
        batch = {"x": x, "x_in": x_in, "label": labels}
        return dict(indices=indices, logits=logits, recon=-model.likelihood.log_prob(decoder(e), x),
                    terms=model.eval_terms(params, batch, inputs.example_keys(jax.random.key(28), 4)),
                    decoded=model.decode(params, v, given), decoded_other=model.decode(params, v, other),
                    own=model.likelihood.mean(decoder(codes(x)[1])), reconstructed=model.reconstruct(params, x, labels))

    p = f64(pieces(params))
    indices = np.asarray(p["indices"]).astype(int)
    prior_nll = -np.sum(np.take_along_axis(log_softmax(p["logits"]), indices[..., None], -1), axis=(1, 2, 3))
    np.testing.assert_allclose(p["terms"]["recon"], p["recon"], rtol=1e-5)
    np.testing.assert_allclose(p["terms"]["kl"], prior_nll, rtol=1e-5)
    assert np.max(np.abs(p["decoded"] - p["decoded_other"])) > 1e-3
    # Reconstructions decode x's own codes under x's condition.
    np.testing.assert_allclose(p["reconstructed"], p["own"], rtol=1e-5, atol=1e-6)


def test_vqvae_config_rules():
    with pytest.raises(ConfigError, match="^--codebook_size must be in 2..65536, got 1$"):
        validate(Config.create(**dict(TINY, codebook_size=1)))
    with pytest.raises(ConfigError, match="^--commitment must be >= 0, got -0.1$"):
        validate(Config.create(**dict(TINY, commitment=-0.1)))
    with pytest.raises(ConfigError, match="^--pixelcnn_layers must be > 0, got 0$"):
        validate(Config.create(**dict(TINY, pixelcnn_layers=0)))
    with pytest.raises(ConfigError, match="use --arch conv or resnet, got --arch mlp"):
        make_model(Config.create(**dict(TINY, arch="mlp")), BINARY)
    for decay in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=f"^--codebook_ema must be in \\[0, 1\\) \\(0: off\\), got {decay}$"):
            validate(Config.create(**dict(TINY, codebook_ema=decay)))
    with pytest.raises(ConfigError, match="--codebook_ema 0.99 is not used by --model vae"):
        make_model(Config.create(model="vae", codebook_ema=0.99), BINARY)
    assert "codebook_count" not in jax.eval_shape(make_model(Config.create(**TINY), BINARY).init, jax.random.key(0))
    with pytest.raises(ConfigError, match="--codebook_size 5 is not used by --model vae"):
        make_model(Config.create(**dict(TINY, model="vae")), BINARY)
    model = make_model(Config.create(model="vqvae", arch="conv"), InputSpec(image_shape=(28, 28, 1), num_classes=10,
                                                                          mode="binary"))
    assert isinstance(model, VQVAE) and model.grid == (7, 7) and model.latent_dim == 7 * 7 * 16
    assert (model.codebook_size, model.commitment, model.pixelcnn_layers) == (128, 0.25, 6)


@pytest.mark.slow
def test_trains_samples_and_evaluates_through_the_clis(tfds_dir, tmp_path):
    workdir = str(tmp_path / "vq")
    code, out, err = call("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--model", "vqvae",
                          "--arch", "conv", "--channels", "4,8", "--latent_dim", "3", "--codebook_size", "8",
                          "--pixelcnn_layers", "2", "--pixelcnn_channels", "8", "--codebook_ema", "0.9",
                          "--steps", "2", "--eval_every", "2",
                          "--batch_size", "16", "--train_split", "train[:64]", "--eval_split", "test[:16]",
                          "--no_progress")
    assert code == 0, err[-3000:]
    assert "training vqvae/" in out and "final:" in out
    code, out, err = call("sample.py", "--workdir", workdir, "--num_samples", 8, "--output", tmp_path / "s.png",
                          "--save_array", tmp_path / "s.npy")
    assert code == 0, err[-3000:]
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (8, 28, 28, 1) and 0 <= images.min() and images.max() <= 1
    code, out, err = call("evaluate.py", "--workdir", workdir, "--num_images", 8, "--batch_size", 8, "--no_progress")
    assert code == 0, err[-3000:]
    with open(f"{workdir}/eval_test.json") as f:
        report = json.load(f)
    assert "nll_iwae" not in report and report["iwae_samples"] == 0
    assert report["bpd"] == pytest.approx(report["recon_bpd"] + report["prior_bpd"])
    assert report["bpd"] == pytest.approx(report["nelbo"] / (784 * np.log(2)))
    assert 0 < report["prior_bits_per_code"] and report["prior_bpd"] == pytest.approx(
        report["prior_bits_per_code"] * 49 / 784)
    assert "prior_bpd" in out and "recon_bpd" in out
