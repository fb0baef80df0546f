"""``mlcl config validate``: check a configuration file and build its components without training."""

from __future__ import annotations

from pathlib import Path

import torch

from mlcl.engine.build import (
    model_from_config,
    objective_from_config,
    optimizer_from_config,
    parse_loss_name,
    probe_c_from_config,
    projection_from_config,
    scheduler_from_config,
)
from mlcl.engine.config import load_config

__all__ = ["validate_config_file"]


def validate_config_file(path: str | Path, *, build: bool = True, num_classes: int = 80) -> str:
    """Check a configuration file and build its components without data.

    Loads ``path`` (keys, types, choices), then builds the model on the meta device, the loss and the
    optimiser. Data paths are not opened (the data may live elsewhere). Returns a one-line summary.

    Raises:
        ConfigError: For a bad key, value, loss name or model setting.
    """
    cfg = load_config(path)
    parse_loss_name(cfg.loss.name)
    projection_from_config(cfg)
    probe_c_from_config(cfg)
    if cfg.train.method == "mulcon":
        from mlcl.engine.build import mulcon_stage_configs

        stages = list(mulcon_stage_configs(cfg))
    else:
        stages = [cfg]
    if build:
        for stage in stages:
            stage.model.weights = None
            stage.model.pretrained = False
            with torch.device("meta"):
                model = model_from_config(stage, num_classes)
            objective_from_config(stage)
            opt = optimizer_from_config(stage, model)
            scheduler_from_config(stage, opt, steps_per_epoch=10)
    return (
        f"ok ({cfg.train.method}, backbone {cfg.model.backbone}, head {cfg.model.head}, loss {cfg.loss.name}"
        f"{', contrastive ' + cfg.loss.contrastive if cfg.loss.contrastive != 'none' else ''}, data {cfg.data.train})"
    )
