"""The speed options decided at start-up (:mod:`mlcl.engine.speed`): the rule, its record in config.yaml and the
run's first log line, channels-last batches, the fused optimiser and ``train.compile``."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import mlcl.engine.speed as speed
from mlcl.engine.amp import amp_settings
from mlcl.engine.config import load_config
from mlcl.engine.loop import train_step
from mlcl.engine.objective import Objective
from mlcl.engine.optim import build_optimizer
from mlcl.losses import BCELoss
from mlcl.models.classifier import ModelOutput
from tests.helpers.resume import QUIET_CPU
from tests.helpers.synthetic import make_shapes_csv

BF16 = frozenset({"fpu", "avx512f", "avx512_bf16"})
AMX = frozenset({"fpu", "avx512f", "amx_tile", "amx_bf16"})
PLAIN = frozenset({"fpu", "avx2", "avx512f"})
CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx512_bf16\n\nprocessor\t: 1\nflags : fpu\n")
    assert speed.cpu_flags(str(info)) == frozenset({"fpu", "sse", "avx512_bf16"})  # the first processor's
    assert speed.cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.parametrize("flags", [BF16, AMX, PLAIN])
def test_auto_amp_is_float32_on_every_cpu(flags: frozenset[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast was slower than channels-last alone on the measured AVX512-BF16 CPU: an option, not a default."""
    monkeypatch.setattr(speed, "cpu_flags", lambda: flags)
    cfg = speed.resolve_speed(load_config(None, []), CPU)
    assert (cfg.train.amp, cfg.train.channels_last, cfg.optim.fused) == ("off", True, True)
    cfg = speed.resolve_speed(load_config(None, ["train.amp=bf16"]), CPU)
    assert cfg.train.amp == "bf16"


def test_auto_amp_is_float16_on_cuda_and_explicit_values_are_kept() -> None:
    assert speed.resolve_speed(load_config(None, []), torch.device("cuda")).train.amp == "fp16"
    given = ["train.amp=off", "train.channels_last=false", "optim.fused=false"]
    cfg = speed.resolve_speed(load_config(None, given), CPU)
    assert (cfg.train.amp, cfg.train.channels_last, cfg.optim.fused) == ("off", False, False)


def test_amp_settings_auto_follows_the_same_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    for flags in (BF16, PLAIN):
        monkeypatch.setattr(speed, "cpu_flags", lambda flags=flags: flags)
        assert amp_settings("auto", CPU) == (False, torch.float32, False)
    assert amp_settings("bf16", CPU) == (True, torch.bfloat16, False)


def test_the_first_line_names_the_resolved_options() -> None:
    cfg = speed.resolve_speed(load_config(None, ["train.amp=bf16"]), CPU)
    line = speed.describe_speed(cfg, CPU, flags=BF16)
    assert line.startswith("speed on CPU") and "native bf16: avx512_bf16" in line
    for part in ("bf16 autocast (losses in float32)", "channels-last", "fused adamw", "eager"):
        assert part in line, part
    cfg = speed.resolve_speed(load_config(None, ["train.compile=true"]), CPU)
    line = speed.describe_speed(cfg, CPU, flags=PLAIN)
    assert "native bf16: no" in line and "float32" in line and "torch.compile" in line


def test_the_fused_optimiser_makes_torchs_update() -> None:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(7, 3)), nn.Parameter(torch.randn(3))]
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    fused = build_optimizer([{"params": params, "lr": 0.1, "weight_decay": 0.01}], "adamw", fused=True)
    assert fused.defaults["fused"] is True
    reference = torch.optim.AdamW(copies, lr=0.1, weight_decay=0.01, foreach=False)  # the for-loop update
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(params, copies, strict=True):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused.step()
        reference.step()
    for p, q in zip(params, copies, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> ModelOutput:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        h = self.conv(x).mean((2, 3))
        return ModelOutput(logits=self.fc(h), embedding=h)


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_step_gives_the_model_channels_last_batches(channels_last: bool) -> None:
    model = _Conv()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    t: Any = SimpleNamespace(
        device=CPU, amp=amp_settings("off", CPU), net=model, model=model, objective=Objective(BCELoss()),
        optimizer=optimizer, scaler=torch.amp.GradScaler("cpu", enabled=False),
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        cfg=SimpleNamespace(optim=SimpleNamespace(clip_grad_norm=None)), channels_last=channels_last,
    )  # fmt: skip
    train_step(t, torch.randn(2, 3, 8, 8), torch.tensor([[1, 0], [0, 1]]), torch.arange(2))
    assert model.seen == [channels_last]


def _fit(tmp_path: Path, extra: list[str]) -> Path:
    from mlcl.engine.trainer import fit

    csv = make_shapes_csv(tmp_path / "data", n=24)
    over = [*QUIET_CPU, "model.backbone=resnet10t", f"data.train={csv}", f"run.out={tmp_path / 'run'}"]
    over += ["train.epochs=1", "train.batch_size=8", "data.image_size=32", "train.max_steps_per_epoch=2", *extra]
    return fit(load_config(None, over)).run_dir


@pytest.mark.parametrize(("flags", "amp"), [(BF16, "off"), (PLAIN, "off")])
def test_a_run_records_the_resolved_options_and_names_them_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flags: frozenset[str], amp: str
) -> None:
    monkeypatch.setattr(speed, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.INFO, logger="mlcl"):
        run = _fit(tmp_path, [])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["train"]["amp"], saved["train"]["channels_last"], saved["optim"]["fused"]) == (amp, True, True)
    assert saved["train"]["compile"] is False
    first = caplog.records[0].getMessage()
    assert first.startswith("speed on CPU") and ("bf16 autocast" in first) == (amp == "bf16"), first


def test_train_compile_compiles_the_training_forward_and_logs_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compiled: list[nn.Module] = []

    def fake_compile(module: nn.Module) -> nn.Module:  # the wiring, without minutes of compiling
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    with caplog.at_level(logging.INFO, logger="mlcl"):
        run = _fit(tmp_path, ["train.compile=true"])
    assert len(compiled) == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["compile"] is True
    timed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("torch.compile: the first step")]
    assert len(timed) == 1, timed
