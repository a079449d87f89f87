"""The two-stage VAE (jaxae.families.two_stage): stage 1's and stage 2's losses, the
two-stage bound and the prior draws against numpy at random parameters, the scalar
decoder variance of the Gaussian stage 1, and the train step updating one stage at a time."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from family_helpers import BINARY, binary_images, cross_entropy, f64, random_params, train_two_steps_and_sample

from jaxae import inputs, sampling
from jaxae.config import Config
from jaxae.config.validation import validate
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families import make_model
from jaxae.families.two_stage import TwoStage
from jaxae.training.state import create_train_state
from jaxae.training.step import make_train_step

D = 3
TINY = dict(model="two_stage", hidden_dims=(16,), latent_dim=D, stage2_hidden=8, steps=10, stage1_steps=4)
LOG_2PI = math.log(2 * math.pi)


def relu_mlp(p, x):
    """numpy: Dense_0, Dense_1, ... with relu between them; the last one's outputs split in two halves."""
    n = len(p)
    for i in range(n):
        x = x @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
        x = np.maximum(x, 0) if i < n - 1 else x
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def gaussian_log_prob(z, mean, logvar):
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mean) ** 2 / np.exp(logvar), axis=-1)


def kl_standard(m, logvar):
    return 0.5 * np.sum(np.exp(logvar) + m**2 - 1 - logvar, axis=-1)


def numpy_terms(params, x, eps, eps2, cond):
    """numpy: stage 1's code z, -log p(x|z)'s decoder input and KL, stage 2's negative ELBO at z,
    log q(z|x); cond (B, K) joins the encoder's flattened input (K = 0: unconditioned)."""
    mean, logvar = relu_mlp(params["encoder"], np.concatenate([x.reshape(len(x), -1), cond], axis=-1))
    z = mean + np.exp(0.5 * logvar) * eps
    m, lv = relu_mlp(params["stage2_encoder"], z)
    mu, _ = relu_mlp(params["stage2_decoder"], m + np.exp(0.5 * lv) * eps2)
    gamma_logvar = np.full_like(z, params["stage2_log_gamma"])
    nelbo2 = -gaussian_log_prob(z, mu, gamma_logvar) + kl_standard(m, lv)
    return dict(z=z, kl=kl_standard(mean, logvar), nelbo2=nelbo2, log_q=gaussian_log_prob(z, mean, logvar))


def decoder_logits(params, z, cond):
    """The stage-1 decoder's logits at [z, cond]."""
    p = params["decoder"]
    z = np.concatenate([z, cond], axis=-1)
    return np.maximum(z @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0) @ p["Dense_1"]["kernel"] \
        + p["Dense_1"]["bias"]


@functools.partial(jax.jit, static_argnums=0)
def pieces(model, params, x, keys, labels):
    batch = {"x": x, "x_in": x, "label": labels}
    return dict(eps=model.noise(keys), eps2=model.noise(inputs.fold(keys, 6)),
                stage1=model.loss(params, batch, keys, 3), stage2=model.loss(params, batch, keys, 4),
                terms=model.eval_terms(params, batch, keys))


@pytest.fixture(scope="module", params=[False, True], ids=["unconditioned", "label"])
def case(request):
    """The model (unconditioned, or stage 1 conditioned on the label), random parameters,
    5 images with labels, the library's numbers, numpy's, and the condition numpy used."""
    model = make_model(Config.create(**TINY, conditional=request.param), BINARY)
    params = random_params(model, seed=31, scale=1.0)
    x, keys = binary_images(5, seed=32), inputs.example_keys(jax.random.key(33), 5)
    labels = jnp.array([0, 3, 9, 3, 1])
    cond = np.eye(10)[np.asarray(labels)] if request.param else np.zeros((5, 0))
    p = f64(pieces(model, params, x, keys, labels))
    ref = numpy_terms(f64(params), np.asarray(x, np.float64), p["eps"], p["eps2"], cond)
    return model, params, x, p, dict(ref, cond=cond, labels=labels)


def test_stage1_loss_is_the_vae_nelbo_and_stage2_loss_the_nelbo_of_the_codes(case):
    model, params, x, p, ref = case
    probs = 1 / (1 + np.exp(-decoder_logits(f64(params), ref["z"], ref["cond"]).reshape(x.shape)))
    nelbo1 = cross_entropy(probs, x) + ref["kl"]
    (loss1, s1), (loss2, s2) = p["stage1"], p["stage2"]
    np.testing.assert_allclose(loss1, nelbo1.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss2, ref["nelbo2"].mean(), rtol=1e-5)
    assert (s1["stage"], s2["stage"]) == (1.0, 2.0)
    np.testing.assert_allclose([s2["nelbo"], s2["stage2_nelbo"]], [nelbo1.mean(), ref["nelbo2"].mean()], rtol=1e-5)
    # The evaluation's bound on the two-stage model: -log p(x|z) + log q(z|x) - ELBO_2(z).
    np.testing.assert_allclose(p["terms"]["nelbo_two_stage"], cross_entropy(probs, x) + ref["log_q"] + ref["nelbo2"],
                               rtol=1e-5)
    np.testing.assert_allclose(p["terms"]["nelbo"], nelbo1, rtol=1e-5)


def test_each_stage_loss_reaches_only_its_own_parameters(case):
    model, params, x, _, ref = case
    keys = inputs.example_keys(jax.random.key(34), 5)
    batch = {"x": x, "x_in": x, "label": ref["labels"]}
    for step, frozen in ((3, "stage2"), (4, "stage1")):
        grads = jax.jit(jax.grad(lambda q: model.loss(q, batch, keys, step)[0]))(params)  # noqa: B023
        for name, sub in grads.items():
            norm = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(sub))
            assert (norm == 0) == (name.startswith("stage2") == (frozen == "stage2")), (step, name)


def test_train_step_updates_one_stage_at_a_time():
    """With Adam, stage 1 stays fixed after the switch although its momentum is not zero."""
    model = make_model(Config.create(**dict(TINY, stage1_steps=2)), BINARY)
    optimizer = optax.adam(1e-2)
    state = create_train_state(model, optimizer, jax.random.key(0))
    step = jax.jit(make_train_step(model, optimizer))
    batch = {"image": jnp.asarray(np.asarray(binary_images(8)), jnp.uint8)}
    history = [state.params]
    for i in range(4):
        state, metrics = step(state, batch, jax.random.key(i))
        assert float(metrics["skipped"]) == 0.0
        history.append(state.params)
    stage1 = lambda q: {k: v for k, v in q.items() if not k.startswith("stage2")}  # noqa: E731
    stage2 = lambda q: {k: v for k, v in q.items() if k.startswith("stage2")}  # noqa: E731
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), a, b)))  # noqa: E731
    assert not same(stage1(history[0]), stage1(history[2])) and same(stage2(history[0]), stage2(history[2]))
    assert same(stage1(history[2]), stage1(history[4])) and not same(stage2(history[2]), stage2(history[4]))
    assert float(metrics["stage"]) == 2.0


def test_gaussian_stage1_has_one_learned_scale():
    """--likelihood gaussian: the decoder's means with one scalar log-scale for every pixel."""
    spec = InputSpec(image_shape=(6, 6, 1), num_classes=10, mode="dequantize")
    model = make_model(Config.create(likelihood="gaussian", binarize="none", **TINY), spec)
    params = random_params(model, seed=35, scale=0.5)
    assert params["decoder"]["log_scale"].shape == ()
    x = jnp.asarray(np.random.default_rng(36).random((2, 6, 6, 1)), jnp.float32)
    keys = inputs.example_keys(jax.random.key(37), 2)
    got = f64(model.eval_terms(params, {"x": x, "x_in": x}, keys))
    q = f64(params)
    ref = numpy_terms({**q, "decoder": q["decoder"]["decoder"]}, np.asarray(x, np.float64),
                      np.asarray(model.noise(keys), np.float64), np.zeros((2, D)), np.zeros((2, 0)))
    mean = decoder_logits({"decoder": q["decoder"]["decoder"]}, ref["z"], np.zeros((2, 0)))
    log_scale = np.clip(q["decoder"]["log_scale"], -7, 2)
    log_px = gaussian_log_prob(np.asarray(x, np.float64).reshape(2, -1), mean, np.full_like(mean, 2 * log_scale))
    np.testing.assert_allclose(got["recon"], -log_px + 36 * math.log(256), rtol=1e-5)


def test_prior_draws_go_through_the_stage2_decoder(case):
    model, params, _, _, _ = case
    rng = jax.random.key(38)
    u = 0.6 * np.asarray(jax.random.normal(rng, (4, D)), np.float64)
    expected, _ = relu_mlp(f64(params)["stage2_decoder"], u)
    draws = model.prior_draws(params, rng, 4, 0.6)
    np.testing.assert_allclose(draws, expected, rtol=1e-5, atol=1e-6)
    given = jnp.array([2, 2, 5, 7]) if model.conditional else None       # Samples decode under the labels given.
    np.testing.assert_allclose(sampling.sample_prior(model, params, rng, 4, 0.6, given),
                               model.decode(params, draws, given), atol=1e-6)


def test_two_stage_config_rules():
    with pytest.raises(ConfigError, match="^--stage1_steps must be >= 0 \\(0: half of --steps\\), got -1$"):
        validate(Config.create(**dict(TINY, stage1_steps=-1)))
    with pytest.raises(ConfigError, match="^--stage2_hidden must be > 0, got 0$"):
        validate(Config.create(**dict(TINY, stage2_hidden=0)))
    with pytest.raises(ConfigError, match="^--stage1_steps 10 leaves no step of --steps 10 to stage 2$"):
        make_model(Config.create(**dict(TINY, stage1_steps=10)), BINARY)
    with pytest.raises(ConfigError, match="needs --stage1_steps"):
        make_model(Config.create(**dict(TINY, stage1_steps=0, epochs=3)), BINARY)
    model = make_model(Config.create(model="two_stage", steps=100), BINARY)
    assert isinstance(model, TwoStage) and (model.stage1_steps, model.stage2_hidden) == (50, 256)


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="two_stage", stage2_hidden=8)
    assert model.stage1_steps == 1 and np.isfinite(final["test_nelbo_two_stage"]) and np.isfinite(final["test_bpd"])
