import pytest

from jaxae import cli
from jaxae.config import Config, ConfigError, validate


@pytest.mark.parametrize("changes,message", [
    ({"likelihood": "logistic_mixture"}, "--likelihood logistic_mixture scores 8-bit grey levels; use it with "
                                         "--binarize none"),
    ({"likelihood": "logistic_mixture", "binarize": "none", "num_mixtures": 0}, "--num_mixtures must be > 0, got 0"),
    ({"eval_split": "train[45000:]"}, "--eval_split 'train[45000:]' is part of --train_split 'train'; hold it out"),
    ({"eval_split": " "}, "--eval_split must be a TFDS split"),
    ({"hflip": "yes"}, "--hflip must be true or false, got 'yes'"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[")):
        validate(Config(**changes))


def test_new_settings_accepted_and_round_trip(tmp_path):
    config = validate(Config(likelihood="logistic_mixture", binarize="none", num_mixtures=5, hflip=True,
                             train_split="train[:45000]", eval_split="train[45000:]"))
    config.save(str(tmp_path / "config.json"))
    assert Config.load(str(tmp_path / "config.json")) == config


def test_boolean_flags():
    parser = cli.ArgumentParser()
    cli.add_config_flags(parser)
    assert cli.config_from_args(parser.parse_args([])).hflip is False
    assert cli.config_from_args(parser.parse_args(["--hflip"])).hflip is True
    assert cli.config_from_args(parser.parse_args(["--hflip", "--no-hflip"])).hflip is False
    args = parser.parse_args(["--train_split", "train[:45000]", "--eval_split", "train[45000:]", "--num_mixtures", "3"])
    assert validate(cli.config_from_args(args)).num_mixtures == 3
