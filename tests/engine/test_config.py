from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mlcl.data.transforms import AUGMENT_PRESETS
from mlcl.engine.config import (
    Config,
    check_values,
    config_from_dict,
    config_to_dict,
    dump_config,
    field_choices,
    load_config,
)
from mlcl.engine.optim import OPTIMIZERS, SCHEDULES
from mlcl.errors import ConfigError
from mlcl.losses._common import REDUCTIONS
from mlcl.metrics import AP_VARIANTS
from mlcl.models.classifier import HEADS, PROJECTIONS


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["optim.lr=1e-3", "data.train=my.csv", "train.epochs=3", "loss.options={gamma_neg: 4}"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.train == "my.csv"
    assert cfg.train.epochs == 3
    assert cfg.loss.options == {"gamma_neg": 4}
    assert isinstance(cfg.optim.lr, float)


def test_one_entry_of_the_loss_options_at_a_time() -> None:
    cfg = load_config(None, ["loss.options={gamma_neg: 4, clip: 0.1}", "loss.options.warmup_epoch=1",
                             "loss.options.clip=0.2"])  # fmt: skip
    assert cfg.loss.options == {"gamma_neg": 4, "clip": 0.2, "warmup_epoch": 1}
    with pytest.raises(ConfigError, match="section.key"):
        load_config(None, ["optim.lr.x=1"])  # not a mapping field
    with pytest.raises(ConfigError, match="section.key"):
        load_config(None, ["loss.options.a.b=1"])


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


# ------------------------------------------------------------------------------------------------ option sets


@pytest.mark.parametrize(
    ("key", "component_names"),
    [
        ("data.augment", AUGMENT_PRESETS),
        ("model.head", HEADS),
        ("optim.name", OPTIMIZERS),
        ("optim.schedule", SCHEDULES),
        ("run.ap_variant", AP_VARIANTS),
    ],
)
def test_config_accepts_every_name_of_the_component(key: str, component_names: tuple[str, ...]) -> None:
    assert field_choices(key) == tuple(component_names)
    for name in component_names:  # `vocall` was refused by `run.ap_variant` while `metrics` computed it
        section, field = key.split(".")
        assert getattr(getattr(load_config(None, [f"{key}={name}"]), section), field) == name


def test_config_only_option_sets_fit_their_components() -> None:
    assert set(field_choices("loss.reduction")) <= set(REDUCTIONS)
    assert set(field_choices("loss.contrastive")) - {"none"} == set(PROJECTIONS)


def test_every_literal_field_is_checked() -> None:
    """Each field typed with a Literal (or an optional one) rejects other values and names the choices."""
    keys = set()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            key = f"{section.name}.{f.name}"
            try:
                choices = field_choices(key)
            except ConfigError:
                continue
            keys.add(key)
            with pytest.raises(ConfigError, match=re.escape(f"`{key}` must be one of {', '.join(choices)}")):
                load_config(None, [f"{key}=no-such-choice"])
    assert keys == {
        "data.augment",
        "model.head",
        "loss.reduction",
        "loss.contrastive",
        "optim.name",
        "optim.schedule",
        "train.method",
        "train.amp",
        "train.head_init",
        "mulcon.recipe",
        "run.ap_variant",
        "run.calibrate",
        "data.cache",
        "train.freeze_cache",
    }


def test_literal_coercion() -> None:
    cfg = load_config(None, ["train.amp=off", "data.augment=null", "train.head_init=probe", "run.ap_variant=vocall"])
    got = (cfg.train.amp, cfg.data.augment, cfg.train.head_init, cfg.run.ap_variant)
    assert got == ("off", None, "probe", "vocall")  # YAML 1.1 reads an unquoted `off` as false
    with pytest.raises(ConfigError, match=r"`data.augment` must be one of .* \(or null\), got 'warp'"):
        load_config(None, ["data.augment=warp"])
    with pytest.raises(ConfigError, match="`model.head` must be one of linear, mulcon, got 3"):
        load_config(None, ["model.head=3"])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.batch_size=0", "`train.batch_size` must be >= 1, got 0"),
        ("train.epochs=0", "`train.epochs` must be >= 1, got 0"),
        ("data.num_workers=-1", "`data.num_workers` must be >= 0, got -1"),
        ("data.image_size=0", "`data.image_size` must be >= 1, got 0"),
        ("data.val_fraction=1", "`data.val_fraction` must be in (0, 1), got 1.0"),
        ("data.views=0", "`data.views` must be >= 1, got 0"),
        ("data.std=[0.2, 0, 0.2]", "`data.std[1]` must be > 0, got 0.0"),
        ("run.threshold=1.5", "`run.threshold` must be in [0, 1], got 1.5"),
        ("run.threshold=.nan", "`run.threshold` must be a finite number in [0, 1], got nan"),
        ("optim.lr=-1e-3", "`optim.lr` must be >= 0, got -0.001"),
        ("optim.lr=.inf", "`optim.lr` must be a finite number >= 0, got inf"),
        ("mulcon.stage2_batch_size=0", "`mulcon.stage2_batch_size` must be >= 1, got 0"),
    ],
)
def test_value_ranges(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)


def test_value_ranges_allow_null_and_bounds() -> None:
    cfg = load_config(None, ["data.image_size=null", "run.threshold=0", "run.threshold=1", "optim.backbone_lr=0"])
    assert cfg.data.image_size is None and cfg.run.threshold == 1.0
    check_values(cfg)
    cfg.train.batch_size = 0  # set in code: check_values sees it
    with pytest.raises(ConfigError, match="`train.batch_size` must be >= 1, got 0"):
        check_values(cfg)
