"""The TOML config: defaults, exact fractions, one-line errors naming the key, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from advlearn.config import ConfigError, ExperimentConfig, Named, dumps, load_config, parse_config, parse_toml
from advlearn.experiments.main_job import default_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def test_empty_config_takes_the_defaults():
    """An empty table is a valid config: every key has a default."""
    assert parse_config({}) == ExperimentConfig()


def test_eps_as_an_exact_fraction():
    """eps = "8/255" is parsed with Fraction, giving exactly the float 8/255."""
    cfg = parse_config({"threat": {"eps": "8/255"}})
    assert cfg.threat.eps == 8 / 255


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"nmae": "x"}, "nmae"),
        ({"threat": {"esp": 0.3}}, "threat.esp"),
        ({"threat": {"eps": "eight"}}, "threat.eps"),
        ({"threat": {"eps": "1/0"}}, "threat.eps"),
        ({"threat": {"eps": -0.1}}, "threat.eps"),
        ({"threat": {"norm": "l3"}}, "threat.norm"),
        ({"threat": {"bounds": [1.0, 0.0]}}, "threat.bounds"),
        ({"threat": {"bounds": [0.0]}}, "threat.bounds"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"train": [{"epochs": "10"}]}, "train[0].epochs"),
        ({"train": [{"epochs": 0}]}, "train[0].epochs"),
        ({"train": [{"label": "a"}, {"label": "a"}]}, "train[1].label"),
        ({"train": [{"optimizer": "rmsprop"}]}, "train[0].optimizer"),
        ({"train": [{"objective": 3}]}, "train[0].objective"),
        ({"train": [{"objective": {"steps": 3}}]}, "train[0].objective"),
        ({"train": []}, "train"),
        ({"evaluate": {"attacks": [{"steps": 3}]}}, "evaluate.attacks[0]"),
        ({"evaluate": {"eps_sweep": [0.1, -1]}}, "evaluate.eps_sweep"),
        ({"name": "../escape"}, "name"),
    ],
)
def test_bad_configs_name_the_key(raw, key):
    """Unknown keys, wrong types and bad values give a one-line ConfigError that starts with the key."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_data_options_pass_through_to_the_registry():
    """Keys of [data] other than name and val_size are the dataset's own options."""
    cfg = parse_config({"data": {"name": "npz", "path": "x.npz", "val_size": 10}})
    assert cfg.data.options == {"path": "x.npz"}
    assert cfg.data.val_size == 10


def test_named_entries_accept_a_name_or_a_table():
    """A registry entry is "pgd" or {name = "pgd", steps = 40}."""
    cfg = parse_config({"evaluate": {"attacks": ["fgsm", {"name": "pgd", "steps": 40}]}})
    assert cfg.evaluate.attacks == (Named("fgsm"), Named("pgd", {"steps": 40}))


@pytest.mark.parametrize("cfg", [default_config(), default_config(quick=True), ExperimentConfig()])
def test_resolved_config_round_trips(cfg):
    """The config.toml a run writes parses back to the same config."""
    assert parse_config(parse_toml(dumps(cfg))) == cfg


def test_load_config_errors_name_the_file(tmp_path):
    """A missing file, invalid TOML and a bad key all name the file in one line."""
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[threat]\nepz = 0.3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: threat\.epz"):
        load_config(bad)


def test_example_configs_exist_and_parse():
    """Every config shipped in configs/ is valid."""
    assert CONFIGS, "configs/ holds no example"
    for path in CONFIGS:
        load_config(path)


def test_main_job_config_file_matches_the_built_in_default():
    """configs/mnist5k_linf.toml is exactly what `advlearn run` does without a config."""
    path = Path(__file__).parent.parent / "configs" / "mnist5k_linf.toml"
    assert load_config(path) == default_config()
