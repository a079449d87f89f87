"""DRAW (jaxae.families.draw): the attention filterbank against a numpy reference and hand-computed
glimpses, and the recurrence (NELBO, IWAE log-weights, the decoder's canvas from given prior
draws) against a step-by-step numpy re-implementation at random parameters."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_helpers import BINARY, binary_images, f64, random_params, train_two_steps_and_sample

from jaxae import inputs, sampling
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.draw import DRAW, attention_read, attention_write, filterbank

TINY = dict(model="draw", latent_dim=2, draw_steps=3, draw_lstm=5)
LOG_2PI = math.log(2 * math.pi)


# ---- numpy reference -------------------------------------------------------------------------

def np_filterbank(att, height, width, size):
    """Loops over the paper's eqs. 19-26 (pixels a = 1..A): F_Y (N, height), F_X (N, width), gamma."""
    gx_, gy_, log_var, log_delta, log_gamma = att
    gx, gy = (width + 1) / 2 * (gx_ + 1), (height + 1) / 2 * (gy_ + 1)
    delta = (max(height, width) - 1) / (size - 1) * np.exp(log_delta)
    banks = []
    for centre, length in ((gy, height), (gx, width)):
        f = np.zeros((size, length))
        for i in range(1, size + 1):
            mu = centre + (i - size / 2 - 0.5) * delta
            for a in range(1, length + 1):
                f[i - 1, a - 1] = np.exp(-(a - mu) ** 2 / (2 * np.exp(log_var)))
            f[i - 1] /= f[i - 1].sum()
        banks.append(f)
    return banks[0], banks[1], np.exp(log_gamma)


def np_lstm(p, state, inp):
    """flax's LSTMCell: gates from input kernels ii, if, ig, io and hidden denses hi, hf, hg, ho."""
    c, h = state
    gate = {g: inp @ p["i" + g]["kernel"] + h @ p["h" + g]["kernel"] + p["h" + g]["bias"] for g in "ifgo"}
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(gate["f"]) * c + sig(gate["i"]) * np.tanh(gate["g"])
    return (c, sig(gate["o"]) * np.tanh(c)), sig(gate["o"]) * np.tanh(c)


def dense(p, v):
    return v @ p["kernel"] + p["bias"]


def np_write(p, h, shape, write_size):
    if not write_size:
        return dense(p["write"], h).reshape(shape)
    patch = dense(p["write_patch"], h).reshape(write_size, write_size, shape[-1])
    f_y, f_x, gamma = np_filterbank(dense(p["write_attention"], h), shape[0], shape[1], write_size)
    return np.einsum("nh,nmk,mw->hwk", f_y, patch, f_x) / gamma


def np_draw(params, x, eps, steps, units, read_size=0, write_size=0, cond=()):
    """One image x (H, W, 1), eps (T * D,), the flattened condition (K,) or () -> canvas c_T, z,
    mean, logvar (T * D,), step by step."""
    enc_p, dec_p = params["encoder"], params["decoder"]
    canvas, enc, dec = np.zeros(x.shape), (np.zeros(units), np.zeros(units)), (np.zeros(units), np.zeros(units))
    zs, means, logvars = [], [], []
    for e in np.split(eps, steps):
        x_hat = x - 1 / (1 + np.exp(-canvas))
        if read_size:
            f_y, f_x, gamma = np_filterbank(dense(enc_p["read_attention"], dec[1]), *x.shape[:2], read_size)
            r = gamma * np.concatenate([(f_y @ v[..., 0] @ f_x.T).ravel() for v in (x, x_hat)])
        else:
            r = np.concatenate([x.ravel(), x_hat.ravel()])
        enc, h_enc = np_lstm(enc_p["lstm"], enc, np.concatenate([r, dec[1], cond]))
        mean, logvar = np.split(dense(enc_p["posterior"], h_enc), 2)
        z = mean + np.exp(0.5 * logvar) * e
        dec, h_dec = np_lstm(dec_p["lstm"], dec, np.concatenate([z, cond]))
        canvas = canvas + np_write(dec_p, h_dec, x.shape, write_size)
        zs.append(z), means.append(mean), logvars.append(logvar)
    return canvas, np.concatenate(zs), np.concatenate(means), np.concatenate(logvars)


def np_decode(params, z, shape, steps, units, write_size=0, cond=()):
    """The decoder alone on z_{1:T} (T * D,) and the flattened condition (K,) or () -> canvas c_T."""
    canvas, dec = np.zeros(shape), (np.zeros(units), np.zeros(units))
    for z_t in np.split(z, steps):
        dec, h_dec = np_lstm(params["decoder"]["lstm"], dec, np.concatenate([z_t, cond]))
        canvas = canvas + np_write(params["decoder"], h_dec, shape, write_size)
    return canvas


def log_sigmoid(v):
    return -np.logaddexp(0.0, -v)


def bernoulli_log_prob(canvas, x):
    return np.sum(x * log_sigmoid(canvas) + (1 - x) * log_sigmoid(-canvas))


def gaussian_log_prob(z, mean, logvar):
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mean) ** 2 / np.exp(logvar))


# ---- the filterbank --------------------------------------------------------------------------

def test_filterbank_matches_the_papers_equations_and_rows_are_normalised():
    att = np.array([[0.2, -0.1, 0.3, -0.4, 0.5], [-0.6, 0.4, -1.0, 0.2, -0.3]])
    f_y, f_x, gamma = (np.asarray(v, np.float64) for v in filterbank(jnp.asarray(att, jnp.float32), 6, 8, 3))
    assert f_y.shape == (2, 3, 6) and f_x.shape == (2, 3, 8)
    for b in range(2):
        ref_y, ref_x, ref_gamma = np_filterbank(att[b], 6, 8, 3)
        np.testing.assert_allclose(f_y[b], ref_y, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(f_x[b], ref_x, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(gamma[b], ref_gamma, rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([f_y.sum(-1), f_x.sum(-1)]), 1.0, rtol=1e-6)


def test_filter_centres_lie_on_the_hand_computed_grid():
    """width 40, height 30, N = 3, g~X = 0.2, g~Y = -0.2, delta~ = 1/13, sigma = 1.5: g_X = 20.5 * 1.2 =
    24.6, g_Y = 15.5 * 0.8 = 12.4, delta = (40 - 1)/2 * 1/13 = 1.5, so the centres are X: 23.1, 24.6,
    26.1 and Y: 10.9, 12.4, 13.9: each row's mean over pixel positions 1..A (the filters lie far from
    the borders and are wide enough that sampling them at integers does not move their mean)."""
    att = jnp.array([[0.2, -0.2, math.log(2.25), math.log(1 / 13), 0.0]])
    f_y, f_x, _ = filterbank(att, 30, 40, 3)
    centre = lambda f: np.asarray(f[0], np.float64) @ np.arange(1, f.shape[-1] + 1)  # noqa: E731
    np.testing.assert_allclose(centre(f_x), [23.1, 24.6, 26.1], atol=1e-4)
    np.testing.assert_allclose(centre(f_y), [10.9, 12.4, 13.9], atol=1e-4)


def test_identity_like_attention_reads_and_writes_the_pixels():
    """N = A = B, g~ = 0, delta~ = 1 and a tiny variance: the centres are the pixels 1..A, so F = I and
    read = gamma [x, x^], write = w / gamma."""
    rng = np.random.default_rng(0)
    x, x_hat, patch = (jnp.asarray(rng.standard_normal((2, 5, 5, 1)), jnp.float32) for _ in range(3))
    att = jnp.tile(jnp.array([0.0, 0.0, -12.0, 0.0, math.log(2.0)]), (2, 1))
    expected = 2.0 * np.concatenate([np.reshape(x, (2, -1)), np.reshape(x_hat, (2, -1))], axis=1)
    np.testing.assert_allclose(attention_read(att, [x, x_hat], 5), expected, rtol=1e-6)
    np.testing.assert_allclose(attention_write(att, patch, 5, 5), patch / 2.0, rtol=1e-6)


def test_a_2x2_grid_of_stride_2_reads_block_means_and_writes_them_back():
    """4 x 4 image, N = 2, g~ = 0, delta~ = 2/3: centres at 1.5 and 3.5, between two pixels, so a
    narrow filter weighs them 1/2 each: the glimpse is the 2 x 2 block means (times gamma = 3),
    and writing a patch spreads each entry over its block with weight 1/4 (divided by gamma)."""
    img = np.arange(16.0).reshape(1, 4, 4, 1)
    att = jnp.array([[0.0, 0.0, -8.0, math.log(2 / 3), math.log(3.0)]])
    blocks = img[0, :, :, 0].reshape(2, 2, 2, 2).mean(axis=(1, 3))                 # [[2.5, 4.5], [10.5, 12.5]]
    np.testing.assert_allclose(blocks, [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(attention_read(att, [jnp.asarray(img, jnp.float32)], 2)[0], 3.0 * blocks.ravel(),
                               rtol=1e-5)
    patch = jnp.array([[[[1.0], [2.0]], [[3.0], [4.0]]]])
    expected = np.kron(np.array([[1.0, 2.0], [3.0, 4.0]]), np.full((2, 2), 0.25)) / 3.0
    np.testing.assert_allclose(attention_write(att, patch, 4, 4)[0, :, :, 0], expected, rtol=1e-5)


# ---- the recurrence --------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=(0, 4))
def pieces(model, params, x, keys, num_samples):
    """The library's numbers and the noise behind them."""
    model_keys = inputs.fold(keys, inputs.MODEL_FOLD)
    eps_s = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(k, s), 0), (model.noise_dim,)))(jnp.arange(num_samples)))(model_keys)
    batch = {"x": x, "x_in": x}
    v = jax.random.normal(jax.random.key(3), (x.shape[0], model.prior_dim))
    mean, logvar = model.encode(params, x)
    rng = jax.random.key(4)
    given = model.given(x)                    # x_low of a low-res-conditioned case, else None
    first = None if given is None else given[:3]
    cond = model.condition(given)
    return dict(samples=sampling.sample_prior(model, params, rng, 3, 0.5, first),
                scaled_decode=model.decode(params, 0.5 * jax.random.normal(rng, (3, model.prior_dim)), first),
                eps=model.noise(keys), eps_s=eps_s, terms=model.eval_terms(params, batch, keys),
                loss=model.loss(params, batch, keys),
                log_w=model.log_weights(params, x, keys, num_samples, cond=cond),
                v=v, decoded=model.decode(params, v, given), mean=mean, logvar=logvar,
                recon=model.decode(params, mean, given))


CASES = {"no_attention": TINY, "attention": dict(TINY, draw_attention=True, draw_read_size=2, draw_write_size=3),
         # x_low, the 2x2 box average (3x3), joins both LSTMs' inputs.
         "attention_lowres": dict(TINY, draw_attention=True, draw_read_size=2, draw_write_size=3,
                                  condition="lowres", lowres_factor=2)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    settings = CASES[request.param]
    model = make_model(validate(Config.create(**settings)), BINARY)
    assert model.conditional == ("condition" in settings)
    params = random_params(model, seed=21, scale=0.8)
    x, keys = binary_images(4, seed=22), inputs.example_keys(jax.random.key(23), 4)
    sizes = (model.net.read_size, model.net.write_size)
    return model, f64(params), np.asarray(x, np.float64), f64(pieces(model, params, x, keys, 3)), sizes


def np_condition(case, x):
    """The flattened condition of one image x (6, 6, 1): its 2x2 box average (9,), or ()."""
    return x.reshape(3, 2, 3, 2).mean(axis=(1, 3)).ravel() if case[0].conditional else ()


def reference(case, x, eps):
    model, params, _, _, (read_size, write_size) = case
    return np_draw(params, x, eps, 3, 5, read_size, write_size, np_condition(case, x))


def test_nelbo_is_the_step_by_step_recurrence(case):
    """nelbo = -log Bernoulli(x; sigmoid(c_T)) + sum_t KL(N(mu_t, sigma_t^2) || N(0, I)) closed form,
    with z_t = mu_t + sigma_t eps_t fed back through the recurrence."""
    model, _, x, p, _ = case
    assert isinstance(model, DRAW) and model.latent_dim == model.prior_dim == model.noise_dim == 6
    nelbo, kl = [], []
    for b in range(4):
        canvas, _, mean, logvar = reference(case, x[b], p["eps"][b])
        kl.append(0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1 - logvar))
        nelbo.append(-bernoulli_log_prob(canvas, x[b]) + kl[-1])
    np.testing.assert_allclose(p["terms"]["nelbo"], nelbo, rtol=1e-5)
    np.testing.assert_allclose(p["terms"]["kl"], kl, rtol=1e-5)
    assert p["terms"]["kl_per_unit"].shape == (4, 6)
    loss, scalars = p["loss"]
    np.testing.assert_allclose([loss, scalars["nelbo"]], np.mean(nelbo), rtol=1e-5)


def test_log_weights_sample_z_jointly_from_q_and_score_every_step(case):
    """log w = log p(x|z_{1:T}) + sum_t [log N(z_t; 0, I) - log N(z_t; mu_t, sigma_t^2)], z_t drawn
    given z_<t; with one sample it is -NELBO up to the Monte Carlo KL's zero-mean deviation
    0.5 sum (z^2 - eps^2 - sigma^2 - mu^2 + 1) from the closed form, sample by sample."""
    _, _, x, p, _ = case
    for b in range(4):
        for s in range(3):
            eps = p["eps_s"][b, s]
            canvas, z, mean, logvar = reference(case, x[b], eps)
            log_w = (bernoulli_log_prob(canvas, x[b]) + gaussian_log_prob(z, 0.0, 0.0)
                     - gaussian_log_prob(z, mean, logvar))
            np.testing.assert_allclose(p["log_w"][b, s], log_w, rtol=1e-5)
            nelbo = -bernoulli_log_prob(canvas, x[b]) + 0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1 - logvar)
            deviation = 0.5 * np.sum(z ** 2 - eps ** 2 - np.exp(logvar) - mean ** 2 + 1)
            np.testing.assert_allclose(p["log_w"][b, s], -nelbo - deviation, rtol=1e-5)


def test_decoder_canvas_from_fixed_prior_draws(case):
    """decode(z_{1:T}) = sigmoid of the decoder-only recurrence's c_T; sample_prior decodes prior_draws."""
    model, params, x, p, (_, write_size) = case
    for b in range(4):
        canvas = np_decode(params, p["v"][b], (6, 6, 1), 3, 5, write_size, np_condition(case, x[b]))
        np.testing.assert_allclose(p["decoded"][b], 1 / (1 + np.exp(-canvas)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p["samples"], p["scaled_decode"], atol=1e-6)


def test_encode_is_the_mean_path_and_decode_reconstructs_it(case):
    """encode: (mu, logvar) of every step with z_t = mu_t; decoding those means gives that pass's canvas."""
    _, _, x, p, _ = case
    for b in range(4):
        canvas, z, mean, logvar = reference(case, x[b], np.zeros(6))
        np.testing.assert_allclose(z, mean)
        np.testing.assert_allclose(p["mean"][b], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p["logvar"][b], logvar, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p["recon"][b], 1 / (1 + np.exp(-canvas)), rtol=1e-5, atol=1e-7)


def test_draw_config_rules():
    with pytest.raises(ConfigError, match="^--draw_steps must be > 0, got 0$"):
        validate(Config.create(**dict(TINY, draw_steps=0)))
    with pytest.raises(ConfigError, match="^--draw_write_size must be >= 2"):
        validate(Config.create(**dict(TINY, draw_attention=True, draw_write_size=1)))
    with pytest.raises(ConfigError, match="--draw_read_size sets the attention grid; it needs --draw_attention"):
        make_model(Config.create(**dict(TINY, draw_read_size=3)), BINARY)
    with pytest.raises(ConfigError, match="--hidden_dims is not used by --model draw"):
        make_model(Config.create(hidden_dims=(16,), **TINY), BINARY)
    with pytest.raises(ConfigError, match="--draw_steps 3 is not used by --model vae"):
        make_model(Config.create(**dict(TINY, model="vae")), BINARY)
    model = make_model(Config.create(model="draw"), BINARY)
    assert (model.draw_steps, model.draw_lstm, model.net.read_size, model.net.write_size) == (16, 256, 0, 0)


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="draw", hidden_dims=(512, 256),
                                                 draw_steps=2, draw_lstm=8)
    assert model.draw_steps == 2 and np.isfinite(final["test_nelbo"]) and np.isfinite(final["test_bpd"])
