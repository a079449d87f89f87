"""--dtype bfloat16: the networks compute in bfloat16; params, loss and Adam stay float32."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import inputs, training
from jaxae.config import HVAE_PRESETS, Config
from jaxae.data import InputSpec
from jaxae.families import make_model

BINARY = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")


def _operand_dtypes(fn, *args, primitive: str) -> set[str]:
    """dtypes of the inputs of every ``primitive`` in the jaxpr of fn(*args), nested jaxprs included."""
    found = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == primitive:
                found.update(str(v.aval.dtype) for v in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def lecun_normal(model, seed: int):
    """Parameters of model.init's shapes (traced only) drawn like the Dense initialisation:
    kernels N(0, 1/fan_in), biases 0."""
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(s.shape[0]), jnp.float32)
                        if len(s.shape) == 2 else jnp.zeros(s.shape, jnp.float32), shapes)


def _train_both(config, params, images, steps, batch_size=64):
    """``steps`` train steps from ``params`` on consecutive batches of ``images``, with the
    config in float32 and in bfloat16, as one compiled program (two scans); returns per
    dtype the model, the final state and the per-step NELBO."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        model = make_model(config.replace(dtype=dtype), BINARY)
        optimizer = training.make_optimizer(config.optimizer, steps)
        runs[dtype] = model, optimizer, training.make_train_step(model, optimizer)

    @jax.jit
    def run(params):
        out = {}
        for dtype, (_, optimizer, step) in runs.items():
            def body(state, i, step=step):
                start = (i * batch_size) % (len(images) - batch_size)
                batch = {"image": jax.lax.dynamic_slice_in_dim(images, start, batch_size)}
                state, metrics = step(state, batch, jax.random.fold_in(jax.random.key(0), i))
                return state, metrics["nelbo"]

            state = training.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                        opt_state=optimizer.init(params), skipped=jnp.zeros((), jnp.int32))
            out[dtype] = jax.lax.scan(body, state, jnp.arange(steps))
        return out

    return {dtype: (runs[dtype][0], state, np.asarray(losses)) for dtype, (state, losses) in run(params).items()}


def test_bfloat16_mlp_trains_like_float32_with_float32_params_and_adam(mnist5k):
    images = jnp.asarray(mnist5k[1].images[:2048] > 127, jnp.uint8)        # binarized digits
    config = Config.create(hidden_dims=(128,), latent_dim=8, learning_rate=3e-3)
    params = lecun_normal(make_model(config, BINARY), seed=0)
    runs = _train_both(config, params, images, 80)
    (model32, _, loss32), (model16, state16, loss16) = runs["float32"], runs["bfloat16"]
    assert jax.tree.map(jnp.shape, jax.eval_shape(model16.init, jax.random.key(0))) == jax.tree.map(jnp.shape, params)
    assert np.mean(loss16[-10:]) < 0.6 * np.mean(loss16[:3]), loss16
    np.testing.assert_allclose(np.mean(loss16[-10:]), np.mean(loss32[-10:]), rtol=0.03)
    assert np.any(loss16 != loss32)                                          # bfloat16 did round.
    floats = [leaf for leaf in jax.tree.leaves((state16.params, state16.opt_state)) if leaf.dtype != jnp.int32]
    assert {leaf.dtype for leaf in floats} == {jnp.dtype("float32")}    # Params and Adam's moments.
    keys = jax.random.split(jax.random.key(1), 4)
    batch = inputs.Preprocessing(BINARY)({"image": images[:4]}, keys)
    for model, dtype in ((model16, "bfloat16"), (model32, "float32")):
        loss_fn = lambda p, model=model: model.loss(p, batch, keys)[0]  # noqa: E731
        assert _operand_dtypes(jax.grad(loss_fn), state16.params, primitive="dot_general") == {dtype}
        assert jax.eval_shape(loss_fn, state16.params).dtype == jnp.float32


@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_bfloat16_convnets_compute_in_bfloat16_and_match_float32(arch):
    spec = InputSpec(image_shape=(8, 8, 1), num_classes=10, mode="dynamic")
    config = Config.create(arch=arch, channels=(4, 8), latent_dim=4)
    model32, model16 = make_model(config, spec), make_model(config.replace(dtype="bfloat16"), spec)
    shapes = jax.eval_shape(model32.init, jax.random.key(0))
    assert jax.tree.map(jnp.shape, jax.eval_shape(model16.init, jax.random.key(0))) == jax.tree.map(jnp.shape, shapes)
    # Random float32 params (not the initialisation), the same for both.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), jnp.float32), shapes)
    images = jnp.asarray(np.random.default_rng(1).random((4, 8, 8, 1)) < 0.3, jnp.uint8) * 255
    keys = jax.random.split(jax.random.key(2), 4)
    batch = inputs.Preprocessing(spec)({"image": images}, keys)
    assert _operand_dtypes(lambda p: model16.loss(p, batch, keys)[0], params,
                           primitive="conv_general_dilated") == {"bfloat16"}
    assert _operand_dtypes(lambda p: model32.loss(p, batch, keys)[0], params,
                           primitive="conv_general_dilated") == {"float32"}
    terms32, terms16 = jax.jit(lambda p: (model32.eval_terms(p, batch, keys), model16.eval_terms(p, batch, keys)))(
        params)
    assert terms16["nelbo"].dtype == jnp.float32
    np.testing.assert_allclose(terms16["nelbo"], terms32["nelbo"], rtol=1e-2)
    assert np.all(np.abs(np.asarray(terms16["nelbo"]) - np.asarray(terms32["nelbo"])) > 0)   # bfloat16 did round.


# A small 8x8 RGB hierarchy (groups at 1, 4, 4, 8, 8) registered as a preset for the test only,
# so --dtype reaches the network through the family's own build.
TINY_HVAE = {"width": 16, "bottleneck": 8, "zdim": 2, "stages": ((8, 1, 2), (4, 1, 2), (1, 1, 1))}


def test_bfloat16_hvae_matches_float32_with_float32_statistics(monkeypatch):
    """hvae with --dtype bfloat16 at the same (random, non-initial) float32 params as float32:
    convolutions in bfloat16; every exp and log (the groups' std-devs, the Gaussian KLs, the
    discretized logistic mixture) and the loss in float32. Stated tolerance: each example's
    NELBO within 1% relative (a few hundredths of a nat per dimension here) and each group's
    KL within 5%; gradients finite, float32, and within 5% of float32's in direction."""
    monkeypatch.setitem(HVAE_PRESETS, "hvae_tiny", TINY_HVAE)
    spec = InputSpec(image_shape=(8, 8, 3), num_classes=0, mode="grey")
    config = Config.create(model="hvae", arch="hvae_tiny", likelihood="logistic_mixture", binarize="none",
                           num_mixtures=3)
    model32, model16 = make_model(config, spec), make_model(config.replace(dtype="bfloat16"), spec)
    shapes = jax.eval_shape(model32.init, jax.random.key(0))
    assert jax.tree.map(jnp.shape, jax.eval_shape(model16.init, jax.random.key(0))) == jax.tree.map(jnp.shape, shapes)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.3 / np.sqrt(np.prod(s.shape[:-1])),
                                                jnp.float32), shapes)
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3)), jnp.uint8)
    keys = jax.random.split(jax.random.key(2), 4)
    batch = inputs.Preprocessing(spec)({"image": images}, keys)
    loss16 = lambda p: model16.loss(p, batch, keys)[0]  # noqa: E731
    assert _operand_dtypes(loss16, params, primitive="conv_general_dilated") == {"bfloat16"}
    for primitive in ("exp", "log"):
        assert _operand_dtypes(loss16, params, primitive=primitive) == {"float32"}, primitive
    assert _operand_dtypes(lambda p: model32.loss(p, batch, keys)[0], params,
                           primitive="conv_general_dilated") == {"float32"}

    @jax.jit
    def both(p):
        grad = lambda m: jax.grad(lambda q: m.loss(q, batch, keys)[0])(p)  # noqa: E731
        return (model32.eval_terms(p, batch, keys), model16.eval_terms(p, batch, keys), grad(model32), grad(model16))

    terms32, terms16, grads32, grads16 = both(params)
    assert terms16["nelbo"].dtype == terms16["kl_per_unit"].dtype == jnp.float32
    assert float(np.min(terms32["kl_per_unit"])) > 0.1                       # Every group's KL counts.
    np.testing.assert_allclose(terms16["nelbo"], terms32["nelbo"], rtol=1e-2)
    np.testing.assert_allclose(terms16["kl_per_unit"], terms32["kl_per_unit"], rtol=5e-2)
    assert np.all(np.asarray(terms16["nelbo"]) != np.asarray(terms32["nelbo"]))   # bfloat16 did round.
    flat32, flat16 = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(t)]) for t in (grads32, grads16))
    assert {leaf.dtype for leaf in jax.tree.leaves(grads16)} == {jnp.dtype("float32")}
    assert np.all(np.isfinite(flat16))
    assert flat16 @ flat32 / (np.linalg.norm(flat16) * np.linalg.norm(flat32)) > 0.95
