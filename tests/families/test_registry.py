"""The registry: every --model name builds its family, and a new family is one class plus
one register() call — the loop, evaluation and sampling take it without changes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import families, inputs, sampling, workdir
from jaxae.config import HVAE_PRESETS, Config, ModelConfig
from jaxae.data import InputSpec
from jaxae.errors import ConfigError
from jaxae.families.base import LatentModel
from jaxae.training import train_and_evaluate
from jaxae.training.state import init_params, run_once

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="dynamic")


@dataclasses.dataclass(frozen=True)
class ReconOnly(LatentModel):
    """A toy family: the VAE's networks trained on the reconstruction term alone, its KL
    weighted by a setting it declares (``beta``)."""

    beta: float = 1.0

    name = "recon_only"
    settings = ("beta",)

    def loss(self, params, batch, keys, step=0):
        terms = self.forward(params, batch, keys)
        kl = jnp.sum(terms["kl_per_unit"], axis=-1)
        loss = jnp.mean(terms["recon"]) + 1e-3 * self.beta * jnp.mean(kl)
        return loss, {"loss": loss, "recon": jnp.mean(terms["recon"]), "kl": jnp.mean(kl)}


@pytest.mark.parametrize("name", sorted(families.REGISTRY))
def test_every_registered_name_builds_and_scores(name, monkeypatch):
    arch = {"hvae": "hvae_mnist", "vqvae": "conv"}.get(name, "mlp")
    # hvae_mnist with one block and group per stage (this process only): test_families_e2e
    # trains the whole preset through train.py.
    monkeypatch.setitem(HVAE_PRESETS, "hvae_mnist", dict(
        HVAE_PRESETS["hvae_mnist"], stages=tuple((res, 1, 1) for res, _, _ in HVAE_PRESETS["hvae_mnist"]["stages"])))
    # draw's networks are LSTMs: it refuses --hidden_dims away from the default.
    required = {"rae_l2": {"decoder_reg": 1e-3}, "rae_gp": {"decoder_reg": 1e-3},
                "draw": {"hidden_dims": ModelConfig().hidden_dims, "draw_steps": 2, "draw_lstm": 8},
                "vqvae": {"channels": (4,), "codebook_size": 4, "pixelcnn_layers": 1, "pixelcnn_channels": 4}
                }.get(name, {})
    config = families.check_config(Config.create(**{"model": name, "arch": arch, "hidden_dims": (8,), "latent_dim": 2,
                                                    **required}))
    model = families.make_model(config, SPEC)
    params = init_params(model, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 2)
    batch = inputs.Preprocessing(SPEC)({"image": jnp.full((2, 28, 28, 1), 200, jnp.uint8),
                                        "label": jnp.array([3, 4])}, keys)
    # One program, compiled as the initialisation is (eagerly, every op would compile alone).
    loss, scalars = run_once(model.loss, params, batch, keys)
    assert np.isfinite(float(loss)) and float(scalars["loss"]) == float(loss)
    assert model.conditional == (name == "cvae")


def test_a_new_family_is_one_class_and_one_register_call(tfds_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(families.REGISTRY, "recon_only", ReconOnly)
    config = Config.create(model="recon_only", beta=2.0, data_dir=tfds_dir, hidden_dims=(16,), latent_dim=3,
                           steps=20, eval_every=20, checkpoint_every=20, batch_size=32)
    final = train_and_evaluate(config, str(tmp_path), progress=False)
    assert final["step"] == 20 and np.isfinite(final["test_nelbo"])
    model, params, step = workdir.load_model(str(tmp_path))
    assert isinstance(model, ReconOnly) and model.beta == 2.0 and step == 20
    images = sampling.sample_prior(model, params, jax.random.key(0), 4)
    assert images.shape == (4, 28, 28, 1) and float(images.min()) >= 0 and float(images.max()) <= 1
    # The loop logged the scalars the family returned under their own names.
    assert {"train_loss", "train_recon", "train_kl"} <= set(final)
    # Settings the family does not declare are refused, naming the flag.
    with pytest.raises(ConfigError, match="--free_bits"):
        families.check_config(config.replace(free_bits=1.0))


def test_unknown_family_is_refused_with_the_known_names():
    with pytest.raises(ConfigError, match="--model 'nope' is not one of vae, beta_vae"):
        families.check_config(Config.create(model="nope"))
