"""The Predictor's model execution: batch norm folded, channels-last, inference mode, optional bf16; ``mlcl eval``'s
model is the folded one."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from mlcl.engine.checkpoint import save_checkpoint
from mlcl.engine.config import Config, config_to_dict
from mlcl.errors import ConfigError
from mlcl.inference import Predictor
from mlcl.models.factory import create_model
from tests.models.test_batchnorm_folding import _randomise_batchnorm

NAMES = ["a", "b", "c"]
SIZE = 48


def _config() -> Config:
    cfg = Config()
    cfg.model.backbone = "resnet10t"
    cfg.data.image_size = SIZE
    cfg.data.mean, cfg.data.std = [0.5] * 3, [0.5] * 3
    return cfg


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet10t", len(NAMES)).eval()
    _randomise_batchnorm(model)
    return model


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_predictor_folds_a_copy_and_predicts_as_the_unfolded_model() -> None:
    model = _model()
    pred = Predictor(model, _config(), NAMES, torch.device("cpu"))
    assert pred.folded == _batchnorms(model) == 14 and _batchnorms(pred.model) == 0
    assert pred.model.backbone.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = torch.sigmoid(copy.deepcopy(model).double()(x.double()).logits)  # unfolded, float64
    probs = pred.predict_tensor(x)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.double(), reference, rtol=0, atol=1e-5)
    unfolded = Predictor(model, _config(), NAMES, torch.device("cpu"), fold_bn=False, channels_last=False)
    assert unfolded.folded == 0 and _batchnorms(unfolded.model) == 14
    torch.testing.assert_close(unfolded.predict_tensor(x).double(), reference, rtol=0, atol=1e-5)


def test_the_forward_runs_in_inference_mode_and_returns_an_ordinary_tensor() -> None:
    pred = Predictor(_model(), _config(), NAMES, torch.device("cpu"))
    modes: list[tuple[bool, bool]] = []
    pred.model.register_forward_pre_hook(
        lambda _m, _a: modes.append((torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu")))
    )
    probs = pred.predict_tensor(torch.zeros(2, 3, SIZE, SIZE))
    assert modes == [(True, False)]
    assert not probs.is_inference()
    probs[0, 0] = 0.0  # a caller may change it in place (an inference tensor refuses)


def test_bfloat16_precision_autocasts_and_keeps_float32_probabilities() -> None:
    model = _model()
    pred = Predictor(model, _config(), NAMES, torch.device("cpu"), precision="bfloat16")
    seen: list[bool] = []
    pred.model.register_forward_pre_hook(lambda _m, _a: seen.append(torch.is_autocast_enabled("cpu")))
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    probs = pred.predict_tensor(x)
    assert seen == [True] and probs.dtype == torch.float32
    with torch.no_grad():
        reference = torch.sigmoid(model(x).logits)
    assert float((probs - reference).abs().max()) < 0.05  # bf16 keeps about 3 significant digits
    with pytest.raises(ConfigError, match="precision"):
        Predictor(model, _config(), NAMES, torch.device("cpu"), precision="float16")  # type: ignore[arg-type]


def test_a_checkpoints_predictor_has_its_batchnorm_folded(tmp_path: Path) -> None:
    """``mlcl eval`` and ``mlcl predict`` evaluate ``Predictor.from_checkpoint(...).model``."""
    model, cfg = _model(), _config()
    state = {"version": "test", "config": config_to_dict(cfg), "class_names": NAMES, "model_class": "x"}
    save_checkpoint(tmp_path / "best.pt", {**state, "model": model.state_dict(), "eval_weights": "model"})
    pred = Predictor.from_checkpoint(tmp_path / "best.pt")
    assert pred.folded == 14 and _batchnorms(pred.model) == 0
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = torch.sigmoid(model.double()(x.double()).logits)
    torch.testing.assert_close(pred.predict_tensor(x).double(), reference, rtol=0, atol=1e-5)
