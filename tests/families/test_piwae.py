"""PIWAE (jaxae.families.piwae): one loss whose value is the IWAE_(M K) loss, whose gradient in
the encoder's parameters is MIWAE(M, K)'s and in the decoder's is IWAE_(M K)'s, on the same
samples; with one and with two stochastic layers."""

import functools

import jax
import numpy as np
import pytest
from family_helpers import BINARY, binary_images, f64, random_params, train_two_steps_and_sample

from jaxae import inputs
from jaxae.config import Config
from jaxae.families import make_model
from jaxae.families.piwae import PIWAE

M, K = 2, 3


@functools.partial(jax.jit, static_argnums=0)
def gradients(models, params, x, keys):
    batch = {"x": x, "x_in": x}
    return [jax.value_and_grad(lambda p, m=m: m.loss(p, batch, keys)[0])(params) for m in models]


@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_gets_miwae_gradient_and_decoder_iwae_gradient(layers):
    net = dict(hidden_dims=(16,), latent_dim=3, stochastic_layers=layers, top_latent_dim=2, top_hidden_dims=(8,))
    piwae, miwae, iwae = (make_model(Config.create(model=name, num_importance_samples=k, **net, **extra), BINARY)
                          for name, k, extra in (("piwae", K, dict(miwae_m=M)), ("miwae", K, dict(miwae_m=M)),
                                                 ("iwae", M * K, {})))
    assert isinstance(piwae, PIWAE)
    params = random_params(piwae, seed=8, scale=0.8)
    x, keys = binary_images(5, seed=9), inputs.example_keys(jax.random.key(10), 5)
    (loss, grad), (miwae_loss, miwae_grad), (iwae_loss, iwae_grad) = f64(gradients((piwae, miwae, iwae), params,
                                                                                   x, keys))
    np.testing.assert_allclose(loss, iwae_loss, rtol=1e-6)
    assert abs(miwae_loss - iwae_loss) > 1e-2                      # The two objectives differ here.
    mask = piwae.inference_mask(params)
    encoders = sorted(name for name in params if all(jax.tree.leaves(mask[name])))
    assert encoders == (["encoder"] if layers == 1 else ["x_encoder", "z_encoder"])
    assert not any(jax.tree.leaves({n: mask[n] for n in params if n not in encoders}))
    for name in params:
        want = miwae_grad if name in encoders else iwae_grad
        other = iwae_grad if name in encoders else miwae_grad
        for got, expected, wrong in zip(jax.tree.leaves(grad[name]), jax.tree.leaves(want[name]),
                                        jax.tree.leaves(other[name])):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
            if name in ("encoder", "x_encoder", "decoder", "x_decoder"):
                assert np.max(np.abs(expected - wrong)) > 1e-4 * max(1.0, np.max(np.abs(expected)))


def test_trains_two_steps_and_samples(tfds_dir, tmp_path):
    final, model, _ = train_two_steps_and_sample(tfds_dir, str(tmp_path), model="piwae", miwae_m=2,
                                                 num_importance_samples=2)
    assert (model.miwae_m, model.num_importance_samples) == (2, 2) and np.isfinite(final["train_miwae"])
