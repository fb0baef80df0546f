"""``mlcl config validate``: check a configuration file and build its components without training.

Each check is the component's own (one source): the objective is built (every loss checks its arguments when it
is constructed), the learning-rate schedule is built (:func:`~mlcl.engine.optim.lr_multiplier`), the head's and
the optimiser's arguments go through the checks their constructors call, and the scalars no component takes are
checked against :data:`~mlcl.engine.config.RANGES`. Errors name the config key and its value.

Every problem of a file is reported, not only the first: each key of the file is loaded on its own (a bad one
is reported and left at its default), then each independent check runs (:func:`config_problems`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from mlcl.engine.build import (
    check_model_config,
    check_optimizer_config,
    model_from_config,
    mulcon_stage_configs,
    multiplier_from_config,
    objective_from_config,
    optimizer_from_config,
    probe_c_from_config,
    projection_from_config,
    scheduler_from_config,
)
from mlcl.engine.config import Config, check_values, config_from_dict
from mlcl.engine.frozen import check_freeze_config, check_freeze_stages
from mlcl.engine.trainer import parse_checkpoint_every
from mlcl.errors import ConfigError
from mlcl.loss_catalog import parse_loss_name

__all__ = ["config_problems", "validate_config", "validate_config_file"]

_STEPS_PER_EPOCH = 10  # a stand-in: the real count depends on the data, which is not opened


def _collect(problems: list[str], check: Callable[[], Any]) -> bool:
    """Run ``check``; a :class:`ConfigError` is added to ``problems`` (once). Whether it passed."""
    try:
        check()
    except ConfigError as e:
        for line in str(e).splitlines():
            if line not in problems:
                problems.append(line)
        return False
    return True


def config_problems(cfg: Config, *, build: bool = True, num_classes: int = 80) -> list[str]:
    """Every problem :func:`validate_config` finds in ``cfg``, each a line naming the key and its value.

    The checks that do not depend on each other all run: the values' types and ranges, the loss name, the
    projection and probe settings, then for each stage (two for ``train.method=mulcon``) the head's arguments, the
    objective, the optimiser's arguments and the learning-rate schedule, and with ``build`` the model (on the meta
    device) with its optimiser and scheduler. A problem found in both MulCon stages is reported once.
    """
    problems: list[str] = []
    _collect(problems, lambda: check_values(cfg))
    _collect(problems, lambda: parse_checkpoint_every(cfg.train.checkpoint_every))
    _collect(problems, lambda: parse_loss_name(cfg.loss.name))
    _collect(problems, lambda: projection_from_config(cfg))
    _collect(problems, lambda: probe_c_from_config(cfg))
    _collect(problems, lambda: check_freeze_config(cfg))
    stages: list[Config] = []
    if not _collect(
        problems, lambda: stages.extend(mulcon_stage_configs(cfg) if cfg.train.method == "mulcon" else [cfg])
    ):
        return problems
    per_stage = [_stage_problems(stage, build=build, num_classes=num_classes) for stage in stages]
    for i, found in enumerate(per_stage, 1):
        for line in found:
            in_every = all(line in other for other in per_stage)
            shown = line if len(stages) == 1 or in_every else f"stage {i} of `train.method=mulcon`: {line}"
            if shown not in problems:
                problems.append(shown)
    return problems


def _stage_problems(cfg: Config, *, build: bool, num_classes: int) -> list[str]:
    problems: list[str] = []
    model_ok = _collect(problems, lambda: check_model_config(cfg))
    _collect(problems, lambda: objective_from_config(cfg))
    optim_ok = _collect(problems, lambda: check_optimizer_config(cfg))
    _collect(problems, lambda: multiplier_from_config(cfg, _STEPS_PER_EPOCH))
    if build and model_ok and optim_ok:
        _collect(problems, lambda: _build(cfg, num_classes))
    return problems


def _build(cfg: Config, num_classes: int) -> None:
    """The model on the meta device (no weights loaded), with its optimiser and scheduler."""
    cfg.model.weights = None
    cfg.model.pretrained = False
    with torch.device("meta"):
        model = model_from_config(cfg, num_classes)
    check_freeze_stages(cfg, model)
    optimizer = optimizer_from_config(cfg, model)
    scheduler_from_config(cfg, optimizer, steps_per_epoch=_STEPS_PER_EPOCH)


def validate_config(cfg: Config, *, build: bool = True, num_classes: int = 80) -> None:
    """Check ``cfg`` by building what can be built without data or network (see :func:`config_problems`).

    Raises:
        ConfigError: Naming the key at fault and its value (and the stage for ``train.method=mulcon``); with
            several problems, one line each.
    """
    problems = config_problems(cfg, build=build, num_classes=num_classes)
    if problems:
        raise ConfigError("\n".join(problems))


def _load_every_key(path: Path) -> tuple[Config, list[str]]:
    """The file's configuration with its bad keys left at their defaults, and the problem of each bad key."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    problems: list[str] = []
    good: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            if _collect(problems, partial(config_from_dict, {section: values}, source=str(path))):
                good[section] = values
            continue
        for key, value in values.items():
            if _collect(problems, partial(config_from_dict, {section: {key: value}}, source=str(path))):
                good.setdefault(section, {})[key] = value
    return config_from_dict(good, source=str(path)), problems


def validate_config_file(path: str | Path, *, build: bool = True, num_classes: int = 80) -> str:
    """Check a configuration file and build its components without data (see :func:`config_problems`).

    Data paths are not opened (the data may live elsewhere). Returns a one-line summary.

    Raises:
        ConfigError: For bad keys, values, loss names or component arguments: every problem of the file, one line
            each, each starting with the file.
    """
    cfg, problems = _load_every_key(Path(path))  # these lines name the file already
    problems += [f"{path}: {line}" for line in config_problems(cfg, build=build, num_classes=num_classes)]
    if problems:
        raise ConfigError("\n".join(problems))
    contrastive = f", contrastive {cfg.loss.contrastive}" if cfg.loss.contrastive != "none" else ""
    return (
        f"ok ({cfg.train.method}, backbone {cfg.model.backbone}, head {cfg.model.head}, loss {cfg.loss.name}"
        f"{contrastive}, data {cfg.data.train})"
    )
