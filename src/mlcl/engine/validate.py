"""``mlcl config validate``: check a configuration file and build its components without training.

Each check is the component's own (one source): the objective is built (every loss checks its arguments when it
is constructed), the learning-rate schedule is built (:func:`~mlcl.engine.optim.lr_multiplier`), the head's and
the optimiser's arguments go through the checks their constructors call, and the scalars no component takes are
checked against :data:`~mlcl.engine.config.RANGES`. Errors name the config key and its value.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mlcl.engine.build import (
    check_model_config,
    check_optimizer_config,
    model_from_config,
    mulcon_stage_configs,
    multiplier_from_config,
    objective_from_config,
    optimizer_from_config,
    parse_loss_name,
    probe_c_from_config,
    projection_from_config,
    scheduler_from_config,
)
from mlcl.engine.config import Config, check_values, load_config
from mlcl.engine.trainer import parse_checkpoint_every
from mlcl.errors import ConfigError

__all__ = ["validate_config", "validate_config_file"]

_STEPS_PER_EPOCH = 10  # a stand-in: the real count depends on the data, which is not opened


def validate_config(cfg: Config, *, build: bool = True, num_classes: int = 80) -> None:
    """Check ``cfg`` by building what can be built without data or network.

    Checks every value's type and range, the loss name, the projection and probe settings, then for each stage
    (two for ``train.method=mulcon``) builds the objective and the learning-rate schedule and checks the head's
    and the optimiser's arguments. With ``build``, the model is also built on the meta device (no weights are
    loaded) with its optimiser and scheduler.

    Raises:
        ConfigError: Naming the key at fault and its value (and the stage for ``train.method=mulcon``).
    """
    check_values(cfg)
    parse_checkpoint_every(cfg.train.checkpoint_every)
    parse_loss_name(cfg.loss.name)
    projection_from_config(cfg)
    probe_c_from_config(cfg)
    stages = list(mulcon_stage_configs(cfg)) if cfg.train.method == "mulcon" else [cfg]
    for i, stage in enumerate(stages, 1):
        try:
            _validate_stage(stage, build=build, num_classes=num_classes)
        except ConfigError as e:
            if len(stages) == 1:
                raise
            raise ConfigError(f"stage {i} of `train.method=mulcon`: {e}") from None


def _validate_stage(cfg: Config, *, build: bool, num_classes: int) -> None:
    check_model_config(cfg)
    objective_from_config(cfg)
    check_optimizer_config(cfg)
    multiplier_from_config(cfg, _STEPS_PER_EPOCH)
    if build:
        cfg.model.weights = None
        cfg.model.pretrained = False
        with torch.device("meta"):
            model = model_from_config(cfg, num_classes)
        optimizer = optimizer_from_config(cfg, model)
        scheduler_from_config(cfg, optimizer, steps_per_epoch=_STEPS_PER_EPOCH)


def validate_config_file(path: str | Path, *, build: bool = True, num_classes: int = 80) -> str:
    """Check a configuration file and build its components without data (see :func:`validate_config`).

    Data paths are not opened (the data may live elsewhere). Returns a one-line summary.

    Raises:
        ConfigError: For a bad key, value, loss name or component argument; the message starts with the file.
    """
    cfg = load_config(path)  # its errors name the file
    try:
        validate_config(cfg, build=build, num_classes=num_classes)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    contrastive = f", contrastive {cfg.loss.contrastive}" if cfg.loss.contrastive != "none" else ""
    return (
        f"ok ({cfg.train.method}, backbone {cfg.model.backbone}, head {cfg.model.head}, loss {cfg.loss.name}"
        f"{contrastive}, data {cfg.data.train})"
    )
