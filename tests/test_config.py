import json
from pathlib import Path

import pytest

from quadgpt.config import Config, ConfigError, config_from_json, load_config, split_config_args


def test_defaults_then_toml_then_overrides(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nn_layer = 3\n[model.ffn]\nkind = "kan"\n[train]\nlr = 1e-3\n')
    cfg = load_config(toml, ["--model.n_layer=5", "train.compile=true", "--model.ffn.grid_size=7"])
    assert cfg.model.n_layer == 5  # override beats file
    assert cfg.model.ffn.kind == "kan"  # file beats default
    assert cfg.model.ffn.grid_size == 7
    assert cfg.train.lr == 1e-3 and cfg.train.compile is True
    assert cfg.model.n_embd == 768  # untouched default


def test_int_is_accepted_for_float_fields():
    cfg = load_config(None, ["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.n_layr=3", "Did you mean 'n_layer'"),
        ("modle.n_layer=3", "Did you mean 'model'"),
        ("model.ffn.rnak=2", "Did you mean 'rank'"),
        ("model.n_layer=three", "must be of type int"),
        ("train.compile=maybe", "must be of type bool"),
        ("model.attention=fast", "must be one of"),
        ("model.ffn=mlp", "is a section"),
        ("model.n_layer", "section.key=value"),
    ],
)
def test_bad_overrides_fail_clearly(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nlearning_rate = 1e-3\n")
    with pytest.raises(ConfigError, match="Unknown config key 'train.learning_rate'"):
        load_config(toml)


def test_wrong_type_in_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nbias = "yes"\n')
    with pytest.raises(ConfigError, match="model.bias must be of type bool"):
        load_config(toml)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_json_round_trip(tmp_path):
    cfg = load_config(None, ["model.ffn.kind=quadratic", "model.ffn.rank=2", "train.seed=7"])
    cfg.save(tmp_path / "config.json")
    again = config_from_json(json.loads((tmp_path / "config.json").read_text()))
    assert again == cfg and isinstance(again, Config)


def test_split_config_args():
    path, overrides, rest = split_config_args(
        ["--config", "c.toml", "--model.n_layer=2", "--train.lr", "0.1", "--verbose", "pos"]
    )
    assert path == "c.toml"
    assert overrides == ["--model.n_layer=2", "--train.lr=0.1"]
    assert rest == ["--verbose", "pos"]


@pytest.mark.parametrize("preset", ["tiny", "gpt2-small", "gpt2-medium"])
def test_presets_load(preset):
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{preset}.toml")
    assert cfg.model.n_embd % cfg.model.n_head == 0
