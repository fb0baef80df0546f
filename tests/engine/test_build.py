"""The MulCon recipes (``mulcon.recipe``), the rule for a MulCon run's length, and the from-scratch warning, as
resolved by the one build path (:func:`mlcl.engine.build.mulcon_stage_configs`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mlcl.engine.build import mulcon_stage_configs, mulcon_warning
from mlcl.engine.config import Config, load_config
from mlcl.errors import ConfigError
from tests.helpers.synthetic import make_shapes_csv

PRETRAINED = ["train.method=mulcon", "model.weights=w.pth"]


def _stages(over: list[str]) -> tuple[Config, Config]:
    return mulcon_stage_configs(load_config(None, over))


def _stage1(s: Config) -> tuple:
    o = s.optim
    return (s.train.head_init, s.train.freeze_bn, o.name, o.schedule, o.lr, o.attention_lr, o.backbone_lr)


@pytest.mark.parametrize(
    ("over", "stage1", "stage2"),
    [
        # default recipe, pretrained: probe-initialised classifiers, frozen BN statistics, 2e-4 (attention 2e-5)
        (PRETRAINED, ("probe", True, "adamw", "cosine", 2e-4, 2e-5, 2e-4), ("random", True)),
        (["train.method=mulcon", "model.pretrained=true"], ("probe", True, "adamw", "cosine", 2e-4, 2e-5, 2e-4),
         ("random", True)),
        # official: random classifiers, BN statistics updated, 2e-4 head and attention, 2e-5 backbone
        ([*PRETRAINED, "mulcon.recipe=official"], ("random", False, "adamw", "cosine", 2e-4, 2e-4, 2e-5),
         ("random", False)),
        # default recipe from scratch: 2e-3 for everything, random classifiers, BN statistics updated
        (["train.method=mulcon"], ("random", False, "adamw", "cosine", 2e-3, 2e-3, 2e-3), ("random", False)),
        (["train.method=mulcon", "mulcon.recipe=official"], ("random", False, "adamw", "cosine", 2e-4, 2e-4, 2e-5),
         ("random", False)),
        # explicit values win over the recipe
        ([*PRETRAINED, "train.head_init=random", "train.freeze_bn=false", "mulcon.stage1_backbone_lr=1e-5",
          "mulcon.stage1_attention_lr=3e-4"],
         ("random", False, "adamw", "cosine", 2e-4, 3e-4, 1e-5), ("random", False)),
        ([*PRETRAINED, "mulcon.recipe=official", "train.head_init=probe", "mulcon.stage1_lr=1e-3"],
         ("probe", False, "adamw", "cosine", 1e-3, 1e-3, 1e-4), ("random", False)),
    ],
)  # fmt: skip
def test_recipe_resolution(over: list[str], stage1: tuple, stage2: tuple) -> None:
    s1, s2 = _stages(over)
    assert _stage1(s1) == stage1
    assert (s2.train.head_init, s2.train.freeze_bn) == stage2  # stage 2 starts from stage 1's weights: no probe
    o2 = s2.optim  # both recipes keep the official stage 2
    assert (o2.name, o2.schedule, o2.lr, o2.backbone_lr, o2.attention_lr, o2.step_size) == (
        "sgd",
        "step",
        0.01,
        0.001,
        0.001,
        20,
    )
    assert (s2.data.views, s2.loss.contrastive, s2.train.batch_size) == (2, "label", 24)


@pytest.mark.parametrize(
    ("over", "epochs", "warmup"),
    [
        ([], (5, 5), 1.0),  # train.epochs' default, for both stages; warm-up 20 % of stage 1
        (["train.epochs=3"], (3, 3), 0.6),  # --epochs sets the run's length (refused before)
        (["train.epochs=3", "mulcon.stage2_epochs=1"], (3, 1), 0.6),
        (["mulcon.stage1_epochs=25"], (25, 25), 5.0),  # the official 5 of 25 warm-up epochs
        (["train.epochs=2", "mulcon.stage1_epochs=2", "mulcon.stage1_warmup_epochs=0"], (2, 2), 0.0),
    ],
)
def test_epochs_rule(over: list[str], epochs: tuple[int, int], warmup: float) -> None:
    s1, s2 = _stages([*PRETRAINED, *over])
    assert (s1.train.epochs, s2.train.epochs) == epochs
    assert s1.optim.warmup_epochs == pytest.approx(warmup)


def test_conflicting_epochs_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"`train.epochs`=3 \(--epochs\) and `mulcon.stage1_epochs`=2 disagree"):
        _stages([*PRETRAINED, "train.epochs=3", "mulcon.stage1_epochs=2"])


def test_options_the_stages_replace_are_still_refused() -> None:
    with pytest.raises(ConfigError, match="optim.lr"):
        _stages([*PRETRAINED, "optim.lr=1e-3"])


def test_warning_from_scratch_only() -> None:
    assert mulcon_warning(load_config(None, ["train.method=mulcon"])) is not None
    assert mulcon_warning(load_config(None, PRETRAINED)) is None
    assert mulcon_warning(load_config(None, [])) is None  # the linear head learns from scratch


def test_mulcon_run_length_and_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--epochs 2`` runs two epochs of each stage; from scratch one warning names the pretrained backbone."""
    csv = make_shapes_csv(tmp_path / "data", n=20)
    over = [
        "train.device=cpu", "data.num_workers=0", "run.progress=false", "run.tensorboard=false", "run.report=false",
        "model.backbone=resnet10t", f"data.train={csv}", f"run.out={tmp_path / 'run'}", "train.method=mulcon",
        "train.epochs=2", "train.max_steps_per_epoch=1", "train.batch_size=8", "mulcon.stage2_batch_size=8",
        "data.image_size=32", "model.head_dim=16", "model.head_num_sab=0", "model.proj_hidden=16", "model.proj_dim=8",
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mlcl"):
        from mlcl.engine.trainer import fit

        fit(load_config(None, over))
    warnings = [r for r in caplog.records if "needs a pretrained backbone" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    for stage in ("stage1", "stage2"):
        log = [json.loads(x) for x in (tmp_path / "run" / stage / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log if "epoch" in r] == [1, 2]
    saved = load_config(tmp_path / "run" / "config.yaml")  # the resolved lengths and recipe are recorded
    assert (saved.mulcon.stage1_epochs, saved.mulcon.stage2_epochs, saved.mulcon.recipe) == (2, 2, "default")
