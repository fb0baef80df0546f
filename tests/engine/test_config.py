from __future__ import annotations

from pathlib import Path

import pytest

from mlcl.engine.config import Config, config_from_dict, config_to_dict, dump_config, load_config
from mlcl.errors import ConfigError


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["optim.lr=1e-3", "data.train=my.csv", "train.epochs=3", "loss.options={gamma_neg: 4}"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.train == "my.csv"
    assert cfg.train.epochs == 3
    assert cfg.loss.options == {"gamma_neg": 4}
    assert isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.nope=1", "unknown config key 'optim.nope'"),
        ("nosection.lr=1", "unknown config section 'nosection'"),
        ("optim.lr=abc", "`optim.lr` must be a number"),
        ("train.epochs=2.5", "`train.epochs` must be an integer"),
        ("train.ema=maybe", "`train.ema` must be true or false"),
        ("optim.name=rmsprop", "`optim.name` must be one of adam, adamw, sgd"),
        ("lr", "must be `section.key=value`"),
    ],
)
def test_bad_overrides(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.backbone=resnet18", "optim.backbone_lr=1e-4", "data.mean=[0.5, 0.5, 0.5]"])
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert isinstance(again, Config)


def test_unknown_key_in_file_names_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "epochz" in str(e.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("does/not/exist.yaml")


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError):
        config_from_dict({"train": 3})
