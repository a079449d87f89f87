"""The run configuration (jaxae.config): sections and flat names, the JSON forms (nested, and
the flat form of jaxae 0.1), validation, presets, command-line flags over presets, and the
family rules (jaxae.families.check_config)."""

import dataclasses
import json
import os
import re

import pytest

from jaxae import cli, families
from jaxae.config import (FLAGS, SECTIONS, Config, ConfigError, DataConfig, ModelConfig, ObjectiveConfig,
                          OptimizerConfig, RunConfig, burda_epochs, load_preset, total_steps, validate)

OLD_CONFIG_JSON = os.path.join(os.path.dirname(__file__), "fixtures_v0_1", "vae_mlp", "config.json")


# --- Sections and flat names ---

def test_sections_and_flat_names():
    config = Config()
    assert list(SECTIONS) == ["data", "model", "objective", "optimizer", "run"]
    assert [type(getattr(config, s)) for s in SECTIONS] == [DataConfig, ModelConfig, ObjectiveConfig,
                                                           OptimizerConfig, RunConfig]
    # Every field is one flag, named as the field except model.family (--model).
    fields = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert set(FLAGS.values()) == fields and len(FLAGS) == len(fields)
    assert FLAGS["model"] == ("model", "family") and "family" not in FLAGS
    assert FLAGS["latent_dim"] == ("model", "latent_dim") and FLAGS["ema_decay"] == ("optimizer", "ema_decay")
    flat = config.flat()
    assert set(flat) == set(FLAGS)
    assert flat["model"] == "vae" and flat["dataset"] == "mnist_5k" and flat["hidden_dims"] == (512, 256)
    assert flat["learning_rate"] == 1e-3 and flat["adam_eps"] == 1e-8 and flat["steps_per_call"] is None


def test_create_and_replace_by_flat_name():
    config = Config.create(model="iwae", latent_dim=3, num_importance_samples=5, batch_size=16, hflip=True,
                           lr_schedule="burda", adam_eps=1e-4, conditional=True)
    assert config.model.family == "iwae" and config.model.latent_dim == 3 and config.model.conditional is True
    assert config.objective.num_importance_samples == 5 and config.run.batch_size == 16
    assert config.data.hflip is True
    assert config.optimizer.lr_schedule == "burda" and config.optimizer.adam_eps == 1e-4
    changed = config.replace(latent_dim=9, seed=4)
    assert changed.model.latent_dim == 9 and changed.run.seed == 4 and changed.model.family == "iwae"
    assert config.model.latent_dim == 3 and config.run.seed == 0  # Frozen: the original is unchanged.
    assert changed.replace(latent_dim=3, seed=0) == config
    assert Config.create() == Config()
    for bad in ("colour", "family"):
        with pytest.raises(ConfigError, match=f"^unknown config field '{bad}'; known: "):
            Config.create(**{bad: 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.latent_dim = 5


# --- JSON forms ---

def test_nested_json_round_trip(tmp_path):
    config = validate(Config.create(likelihood="logistic_mixture", binarize="none", num_mixtures=5, hflip=True,
                                    train_split="train[:45000]", eval_split="train[45000:]", hidden_dims=(10, 20),
                                    epochs=3, gaussian_scale=None))
    d = json.loads(config.to_json())
    assert set(d) == set(SECTIONS)
    assert d["model"]["family"] == "vae" and d["model"]["hidden_dims"] == [10, 20] and d["run"]["epochs"] == 3
    assert Config.from_dict(d) == config
    config.save(str(tmp_path / "config.json"))
    assert sorted(os.listdir(tmp_path)) == ["config.json"]
    assert Config.load(str(tmp_path / "config.json")) == config
    # A partial nested form fills in the defaults.
    assert Config.from_dict({"model": {"latent_dim": 2}}) == Config.create(latent_dim=2)
    assert Config.from_dict({}) == Config()


def test_old_flat_form_loads():
    """config.json as jaxae 0.1 wrote it: flat flag names, "model" naming the family, lists for tuples."""
    config = Config.from_dict({"model": "cvae", "latent_dim": 4, "hidden_dims": [32, 16], "beta": 2.0,
                               "ema_decay": 0.9, "steps": 40})
    assert config == Config.create(model="cvae", latent_dim=4, hidden_dims=(32, 16), beta=2.0, ema_decay=0.9,
                                   steps=40)
    assert Config.from_dict({"model": "iwae"}).model.family == "iwae"  # Only the family: still the flat form.
    old = Config.load(OLD_CONFIG_JSON)  # A real 0.1 file, every field flat.
    assert old.model.family == "vae" and old.model.hidden_dims == (16,) and old.model.latent_dim == 4
    assert old.optimizer.ema_decay == 0.9 and old.run.steps == 40 and old.run.steps_per_call == 10
    assert old.data.data_dir == "/tmp/fixture_tfds" and old.model.channels == (32, 64)
    assert old.optimizer.adam_eps == 1e-8 and old.model.conditional is False  # Fields added later: defaults.
    with open(OLD_CONFIG_JSON) as f:
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f).items()}
    assert {k: v for k, v in old.flat().items() if k in saved} == saved


@pytest.mark.parametrize("d,message", [
    ({"latent_dim": 4, "colour": "red"}, r"unknown config field\(s\) \['colour'\]; known: \["),
    ({"model": {"latent_dim": 4, "colour": "red"}},
     r"unknown field\(s\) \['colour'\] in config section 'model'; known: \["),
    ({"model": {"model": "vae"}}, r"unknown field\(s\) \['model'\] in config section 'model'"),  # Nested: family.
    ({"data": 3}, "config section 'data' must be an object, got 3"),
    ([1, 2], "a config must be a JSON object, got list"),
])
def test_unknown_or_malformed_fields_are_refused_in_one_line(d, message):
    with pytest.raises(ConfigError, match="^" + message) as error:
        Config.from_dict(d)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("d,message", [
    ({"latent_dim": "4"}, "--latent_dim must be of type int, got '4'"),
    ({"latent_dim": 4.5}, "--latent_dim must be of type int, got 4.5"),
    ({"latent_dim": True}, "--latent_dim must be of type int, got True"),
    ({"hflip": "yes"}, "--hflip must be of type bool, got 'yes'"),
    ({"hflip": 1}, "--hflip must be of type bool, got 1"),
    ({"hidden_dims": [64, "a"]}, r"--hidden_dims must be of type tuple\[int, ...\], got \(64, 'a'\)"),
    ({"hidden_dims": 64}, r"--hidden_dims must be of type tuple\[int, ...\], got 64"),
    ({"learning_rate": "fast"}, "--learning_rate must be of type float, got 'fast'"),
    ({"data_dir": 3}, r"--data_dir must be of type str \| None, got 3"),
    ({"optimizer": {"ema_decay": None}}, "--ema_decay must be of type float, got None"),
])
def test_type_errors_are_refused(d, message):
    with pytest.raises(ConfigError, match="^" + message + "$"):
        Config.from_dict(d)


def test_ints_are_accepted_for_floats():
    assert Config.from_dict({"learning_rate": 1, "beta": 2}).optimizer.learning_rate == 1


# --- Validation ---

@pytest.mark.parametrize("changes,message", [
    ({"likelihood": "logistic_mixture"}, "--likelihood logistic_mixture scores 8-bit grey levels; use it with "
                                         "--binarize none"),
    ({"likelihood": "logistic_mixture", "binarize": "none", "num_mixtures": 0}, "--num_mixtures must be > 0, got 0"),
    ({"eval_split": "train[45000:]"}, "--eval_split 'train[45000:]' is part of --train_split 'train'; hold it out"),
    ({"eval_split": " "}, "--eval_split must be a TFDS split"),
    ({"arch": "transformer"}, "--arch 'transformer' is not one of mlp, mlp_flax, mlp_burda, conv, resnet"),
    ({"lr_schedule": "step"}, "--lr_schedule 'step' is not one of constant, cosine, burda"),
    ({"adam_eps": 0.0}, "--adam_eps must be > 0, got 0.0"),
    ({"num_importance_samples": 0}, "--num_importance_samples must be > 0, got 0"),
    ({"ema_decay": 1.0}, "--ema_decay must be in [0, 1) (0 disables the average), got 1.0"),
    ({"skip_threshold": -1.0}, "--skip_threshold must be >= 0"),
    ({"lr_schedule": "burda", "epochs": 10}, "--lr_schedule burda runs 3280 epochs; leave --epochs unset, got 10"),
    ({"lr_schedule": "burda", "warmup_steps": 5}, "--lr_schedule burda has no warm-up"),
    ({"noise_level": 0.1}, "--noise_level 0.1 needs --input_noise flip, gaussian or mask"),
    ({"input_noise": "flip", "noise_level": 1.5}, "--noise_level must be in (0, 1] with --input_noise flip, got 1.5"),
    ({"stochastic_layers": 2, "arch": "conv"}, "--stochastic_layers 2 is built for --arch mlp"),
    ({"hidden_dims": ()}, "--hidden_dims must be a non-empty list of positive widths, got []"),
    ({"batch_size": 1 << 17}, "--batch_size 131072 is absurdly large"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as error:
        validate(Config.create(**changes))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("changes,message", [
    ({"dataset": ""}, "--dataset must be a TFDS dataset name"),
    ({"model": ""}, "--model must name a model family"),
    ({"beta": -1.0}, "--beta must be >= 0, got -1.0"),
    ({"free_bits": -0.5}, "--free_bits must be >= 0, got -0.5"),
    ({"code_l2": -1.0}, "--code_l2 must be >= 0, got -1.0"),
    ({"tc_weight": -1.0}, "--tc_weight must be >= 0, got -1.0"),
    ({"kl_warmup_steps": -1}, "--kl_warmup_steps must be >= 0, got -1"),
    ({"latent_mixture": -1}, "--latent_mixture must be >= 0, got -1"),
    ({"warmup_steps": -1}, "--warmup_steps must be >= 0, got -1"),
    ({"top_latent_dim": 0}, "--top_latent_dim must be > 0, got 0"),
    ({"learning_rate": 0.0}, "--learning_rate must be > 0, got 0.0"),
    ({"steps": 0}, "--steps must be > 0, got 0"),
    ({"batch_size": 0}, "--batch_size must be > 0, got 0"),
    ({"eval_every": 0}, "--eval_every must be > 0, got 0"),
    ({"checkpoint_every": 0}, "--checkpoint_every must be > 0, got 0"),
    ({"keep_checkpoints": 0}, "--keep_checkpoints must be > 0, got 0"),
    ({"max_nonfinite": 0}, "--max_nonfinite must be > 0, got 0"),
    ({"max_skipped": -1}, "--max_skipped must be >= 0 (0: off), got -1"),
    ({"grad_accum": 0}, "--grad_accum must be > 0, got 0"),
    ({"batch_size": 12, "grad_accum": 5}, "--batch_size 12 must be divisible by --grad_accum 5"),
    ({"epochs": 0}, "--epochs must be > 0, got 0"),
    ({"steps_per_call": 0}, "--steps_per_call must be > 0, got 0"),
    ({"gaussian_scale": 0.0}, "--gaussian_scale must be > 0, got 0.0"),
    ({"stochastic_layers": 3}, "--stochastic_layers must be 1 or 2, got 3"),
    ({"grad_clip": -1.0}, "--grad_clip must be >= 0 (0 disables clipping), got -1.0"),
    ({"input_noise": "gaussian", "noise_level": 11.0}, "--noise_level must be in (0, 10] with --input_noise gaussian"),
    ({"channels": (32, 0)}, "--channels must be a non-empty list of positive widths, got [32, 0]"),
    ({"top_hidden_dims": ()}, "--top_hidden_dims must be a non-empty list of positive widths, got []"),
    ({"latent_dim": 1 << 15}, "--latent_dim 32768 is absurdly large (at most 16384)"),
    ({"num_mixtures": 1 << 11}, "--num_mixtures 2048 is absurdly large (at most 1024)"),
    ({"image_size": 0}, "--image_size must be in 1..4096 (or none: keep the native size), got 0"),
    ({"image_size": -3}, "--image_size must be in 1..4096 (or none: keep the native size), got -3"),
    ({"image_size": 4097}, "--image_size must be in 1..4096 (or none: keep the native size), got 4097"),
    ({"image_size": 16.0}, "--image_size must be of type int | None, got 16.0"),
])
def test_every_range_check_refuses_a_value_just_outside_it(changes, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        validate(Config.create(**changes))


def test_values_on_the_edge_of_the_ranges_are_accepted():
    validate(Config.create(beta=0.0, free_bits=0.0, code_l2=0.0, kl_warmup_steps=0, warmup_steps=0, grad_clip=0.0,
                           max_skipped=0, skip_threshold=0.0, ema_decay=0.0, input_noise="gaussian",
                           noise_level=10.0, latent_dim=1 << 14, num_mixtures=1 << 10, image_size=4096))
    validate(Config.create(image_size=1, random_crop=True))


def test_burda_schedule_fixes_the_epochs():
    assert burda_epochs() == 3280 == sum(3 ** i for i in range(8))
    burda = validate(Config.create(lr_schedule="burda", batch_size=100))
    assert total_steps(burda, 4500) == 3280 * 45
    assert total_steps(validate(Config.create(lr_schedule="burda", batch_size=100, epochs=3280)), 4550) == 3280 * 45
    assert total_steps(Config.create(epochs=3, batch_size=100), 4500) == 135
    assert total_steps(Config.create(steps=77, batch_size=100), 4500) == 77


# --- Presets and flags ---

def test_load_preset_json_nested_and_flat(tmp_path):
    nested, flat = tmp_path / "nested.json", tmp_path / "flat.json"
    nested.write_text(json.dumps({"model": {"family": "iwae", "hidden_dims": [64]},
                                  "objective": {"num_importance_samples": 5}}))
    flat.write_text(json.dumps({"model": "iwae", "hidden_dims": [64], "num_importance_samples": 5}))
    expected = {"model": "iwae", "hidden_dims": (64,), "num_importance_samples": 5}
    assert load_preset(str(nested)) == load_preset(str(flat)) == expected
    (tmp_path / "family.json").write_text('{"model": "ae"}')
    assert load_preset(str(tmp_path / "family.json")) == {"model": "ae"}
    (tmp_path / "empty.json").write_text("{}")
    assert load_preset(str(tmp_path / "empty.json")) == {}


def test_load_preset_python(tmp_path):
    returns_config = tmp_path / "a.py"
    returns_config.write_text("from jaxae.config import Config\n\n"
                              "def get_config():\n    return Config.create(model='iwae', latent_dim=3)\n")
    assert load_preset(str(returns_config)) == Config.create(model="iwae", latent_dim=3).flat()
    returns_dict = tmp_path / "b.py"
    returns_dict.write_text("def get_config():\n    return {'model': {'latent_dim': 3}, 'run': {'seed': 2}}\n")
    assert load_preset(str(returns_dict)) == {"latent_dim": 3, "seed": 2}
    returns_flat = tmp_path / "c.py"
    returns_flat.write_text("def get_config():\n    return dict(latent_dim=3, hidden_dims=[8, 8])\n")
    assert load_preset(str(returns_flat)) == {"latent_dim": 3, "hidden_dims": (8, 8)}


def test_bad_presets_are_one_line_errors(tmp_path):
    cases = {"none.py": ("", r"defines no get_config\(\)"),
             "raises.py": ("def get_config():\n    raise ValueError('boom')\n", "failed: ValueError: boom"),
             "list.py": ("def get_config():\n    return [1]\n", "must give a Config or a dict, got list"),
             "bad.json": ("{oops", "is not readable JSON"),
             "list.json": ("[1]", "must give a Config or a dict, got list"),
             "unknown.json": ('{"colour": 1}', r"unknown config field\(s\) \['colour'\]"),
             "preset.yaml": ("latent_dim: 3", r"must end in .json or .py")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=message) as error:
            load_preset(str(tmp_path / name))
        assert "\n" not in str(error.value), name
    with pytest.raises(ConfigError, match=r"^--config '.*missing.json' is not a file"):
        load_preset(str(tmp_path / "missing.json"))


def _parse(argv):
    parser = cli.ArgumentParser(prog="train.py")
    cli.add_config_flags(parser)
    return cli.config_from_args(parser.parse_args(argv))


def test_flags_on_the_command_line_override_a_preset(tmp_path):
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"model": {"family": "iwae", "latent_dim": 7},
                                  "objective": {"num_importance_samples": 5}, "run": {"seed": 3}}))
    from_preset = _parse(["--config", str(preset)])
    assert from_preset == Config.create(model="iwae", latent_dim=7, num_importance_samples=5, seed=3)
    overridden = _parse(["--config", str(preset), "--latent_dim", "3", "--seed", "0", "--hidden_dims", "8,4"])
    assert overridden == Config.create(model="iwae", latent_dim=3, num_importance_samples=5, hidden_dims=(8, 4))
    # The flag wins wherever it stands, and a preset the flags complete is fine on its own terms.
    assert _parse(["--latent_dim", "3", "--config", str(preset)]).model.latent_dim == 3
    split = tmp_path / "split.py"
    split.write_text("def get_config():\n    return {'eval_split': 'train[45000:]'}\n")
    config = _parse(["--config", str(split), "--train_split", "train[:45000]"])
    assert (config.data.train_split, config.data.eval_split) == ("train[:45000]", "train[45000:]")
    # Still validated as a whole: the preset plus flags.
    with pytest.raises(ConfigError, match="is part of --train_split 'train'"):
        _parse(["--config", str(split)])


def test_flags_alone():
    assert _parse([]) == Config()
    assert _parse(["--hflip"]).data.hflip is True
    assert _parse(["--hflip", "--no-hflip"]).data.hflip is False
    config = _parse(["--train_split", "train[:45000]", "--eval_split", "train[45000:]", "--num_mixtures", "3",
                     "--gaussian_scale", "none", "--steps_per_call", "5", "--model", "cvae", "--conditional"])
    assert config.model.num_mixtures == 3 and config.model.gaussian_scale is None and config.run.steps_per_call == 5
    assert config.model.family == "cvae" and config.model.conditional is True


def test_bad_flags_exit_2_with_one_line(capsys):
    for argv in (["--model", "nope"], ["--hidden_dims", "8,x"], ["--latent_dim", "many"]):
        with pytest.raises(SystemExit) as exit_:
            _parse(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("train.py: error: ") and err.count("\n") == 1, err


# --- Family rules ---

@pytest.mark.parametrize("argv,changes,message", [
    (["--model", "iwae", "--free_bits", "1"], {"model": "iwae", "free_bits": 1.0},
     r"^--free_bits 1.0 is not used by --model iwae \(of the objective settings it uses --num_importance_samples\)$"),
    (["--model", "ae", "--beta", "2"], {"model": "ae", "beta": 2.0},
     r"^--beta 2.0 is not used by --model ae \(of the objective settings it uses --code_l2\)$"),
    (["--model", "vae", "--num_importance_samples", "5"], {"num_importance_samples": 5},
     r"^--num_importance_samples 5 is not used by --model vae"),
    (["--model", "cvae", "--condition", "lowres"],
     {"model": "cvae", "condition": "lowres"}, "^--condition lowres is not available for --model cvae$"),
    (["--model", "hvae"], {"model": "hvae"},
     "^--model hvae needs an --arch of hvae_mnist, hvae_cifar_small, hvae_cifar, hvae_64, hvae_256; got --arch mlp$"),
    (["--arch", "hvae_mnist"], {"arch": "hvae_mnist"},
     "^--arch hvae_mnist is a preset of --model hvae, not of --model vae$"),
    (["--model", "ae", "--stochastic_layers", "2"], {"model": "ae", "stochastic_layers": 2},
     "^--stochastic_layers 2 needs a stochastic model"),
])
def test_family_rules_refuse_settings_the_family_would_ignore(argv, changes, message):
    with pytest.raises(ConfigError, match=message):  # From the command line ...
        _parse(argv)
    with pytest.raises(ConfigError, match=message):  # ... and on a config built in code.
        families.check_config(validate(Config.create(**changes)))


def test_family_rules_accept_what_the_family_uses():
    assert families.check_config(Config.create(model="iwae", num_importance_samples=5)).model.family == "iwae"
    assert families.check_config(Config.create(model="ae", code_l2=0.1)).objective.code_l2 == 0.1
    assert families.check_config(Config.create(model="beta_vae", beta=4.0, free_bits=0.5, kl_warmup_steps=10))
    assert families.check_config(Config.create(model="iwae", conditional=True)).model.conditional
    assert families.check_config(Config.create(model="hvae", arch="hvae_mnist", beta=2.0))
    with pytest.raises(ConfigError, match=r"^--model 'nope' is not one of vae, beta_vae, cvae, iwae, ae, hvae"):
        families.check_config(Config.create(model="nope"))
