"""--dtype bfloat16: the networks compute in bfloat16; params, loss and Adam stay float32."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import training
from jaxae.config import Config
from jaxae.data import InputSpec
from jaxae.models import make_model

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")


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


def _train(config, images, steps, batch_size=64):
    model = make_model(config, SPEC)
    optimizer = training.make_optimizer(config, steps)
    state = training.create_train_state(model, optimizer, jax.random.key(0))
    step = jax.jit(training.make_train_step(model, optimizer))
    losses = []
    for i in range(steps):
        start = (i * batch_size) % (len(images) - batch_size)
        state, metrics = step(state, {"image": images[start:start + batch_size]}, jax.random.key(i))
        losses.append(float(metrics["nelbo"]))
    return model, state, np.array(losses)


def test_bfloat16_mlp_trains_like_float32_with_float32_params_and_adam(mnist5k):
    images = jnp.asarray(mnist5k[1].images[:2048])
    config = Config(hidden_dims=(128,), latent_dim=8, learning_rate=3e-3)
    model32, state32, loss32 = _train(config, images, 80)
    model16, state16, loss16 = _train(config.replace(dtype="bfloat16"), images, 80)
    assert np.mean(loss16[-10:]) < 0.6 * np.mean(loss16[:3]), loss16
    np.testing.assert_allclose(np.mean(loss16[-10:]), np.mean(loss32[-10:]), rtol=0.03)
    floats = [leaf for leaf in jax.tree.leaves((state16.params, state16.opt_state)) if leaf.dtype != jnp.int32]
    assert {leaf.dtype for leaf in floats} == {jnp.dtype("float32")}    # Params and Adam's moments.
    batch, keys = {"image": images[:4]}, jax.random.split(jax.random.key(1), 4)
    for model, dtype in ((model16, "bfloat16"), (model32, "float32")):
        loss_fn = lambda p, model=model: model.loss(p, batch, keys)[0]  # noqa: E731
        assert _operand_dtypes(jax.grad(loss_fn), state16.params, primitive="dot_general") == {dtype}
        assert jax.eval_shape(loss_fn, state16.params).dtype == jnp.float32


@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_bfloat16_convnets_compute_in_bfloat16_and_match_float32_at_init(arch):
    config = Config(arch=arch, channels=(8, 16), latent_dim=4)
    model32, model16 = make_model(config, SPEC), make_model(config.replace(dtype="bfloat16"), SPEC)
    params = model32.init(jax.random.key(0))
    assert jax.tree.map(jnp.shape, model16.init(jax.random.key(0))) == jax.tree.map(jnp.shape, params)
    images = jax.random.bernoulli(jax.random.key(1), 0.3, (4, 28, 28, 1)).astype(jnp.uint8) * 255
    batch, keys = {"image": images}, jax.random.split(jax.random.key(2), 4)
    assert _operand_dtypes(lambda p: model16.loss(p, batch, keys)[0], params,
                           primitive="conv_general_dilated") == {"bfloat16"}
    terms32 = model32.per_example(params, batch, keys)
    terms16 = model16.per_example(params, batch, keys)
    assert terms16["nelbo"].dtype == jnp.float32
    np.testing.assert_allclose(terms16["nelbo"], terms32["nelbo"], rtol=1e-2)
