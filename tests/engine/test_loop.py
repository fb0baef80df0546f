"""The training step's guards: nothing is updated with a non-finite loss or gradient; fp16 overflow is a skip."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import mlcl.engine.loop as loop
from mlcl.engine.amp import AmpSettings
from mlcl.models.classifier import ModelOutput


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(logits=self.fc(x), embedding=x)


def _training(objective: Any, *, scaler: torch.amp.GradScaler | None = None) -> SimpleNamespace:
    torch.manual_seed(0)
    model = _Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return SimpleNamespace(
        device=torch.device("cpu"),
        amp=AmpSettings(False, torch.float32, scaler is not None),
        net=model,
        model=model,
        objective=objective,
        optimizer=optimizer,
        scaler=scaler or torch.amp.GradScaler("cpu", enabled=False),
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        cfg=SimpleNamespace(optim=SimpleNamespace(clip_grad_norm=None)),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(5, 4), torch.ones(5, 3), torch.arange(5)


def _weights(t: SimpleNamespace) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.model.parameters()]


def test_non_finite_gradient_stops_before_the_update() -> None:
    def objective(out: ModelOutput, targets: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = torch.sqrt((out.logits - out.logits.detach()).abs()).sum()  # value 0, gradient inf
        return {"base": loss, "loss": loss}

    t = _training(objective)
    before = _weights(t)
    with pytest.raises(loop._NonFinite, match="gradient"):
        loop.train_step(t, *_batch())  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(t), strict=True))


def test_non_finite_loss_stops_before_the_backward() -> None:
    def objective(out: ModelOutput, targets: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        base = out.logits.abs().sum() * float("inf")
        return {"base": base, "loss": base}

    t = _training(objective)
    before = _weights(t)
    with pytest.raises(loop._NonFinite, match="base=inf"):
        loop.train_step(t, *_batch())  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(t), strict=True))


def test_scaled_overflow_is_a_counted_skip_not_an_error() -> None:
    """As float16 overflow under a GradScaler: the step is skipped, the scale lowered, the run goes on."""

    def objective(out: ModelOutput, targets: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = 1e30 * out.logits.square().mean()  # finite, but times the scale it overflows float32
        return {"base": loss, "loss": loss}

    scaler = torch.amp.GradScaler("cpu", init_scale=1e10)
    t = _training(objective, scaler=scaler)
    before = _weights(t)
    values, skipped = loop.train_step(t, *_batch())  # type: ignore[arg-type]
    assert skipped and scaler.get_scale() < 1e10
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(t), strict=True))
    assert values["loss"] > 0


# ------------------------------------------------------------------ the end-of-epoch scoring pass over the training set


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i


class _WithBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5))
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.backbone(x)
        return ModelOutput(logits=self.fc(h), embedding=h)


def _scoring_training(model: nn.Module, loader: Any) -> SimpleNamespace:
    """What :func:`loop.score_train_images` reads of a :class:`Training` (also used by the two-process test)."""
    return SimpleNamespace(
        model=model, device=torch.device("cpu"), amp=AmpSettings(False, torch.float32, False),
        eval_amp=AmpSettings(False, torch.float32, False),
        train_score_loader=loader, class_names=["a", "b", "c"],
    )  # fmt: skip


def test_scoring_pass_scores_every_training_image_in_eval_mode_and_restores_the_modes() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(11, 4), torch.ones(11, 3)
    model = _WithBN()
    model.backbone[1].running_mean.normal_()  # eval mode uses these statistics, train mode the batch's
    model.train()
    loop.freeze_batchnorm(model.backbone)
    modes = {name: m.training for name, m in model.named_modules()}
    # Shuffled and with a last partial batch: the rows must still come back once each, in dataset-index order.
    loader = torch.utils.data.DataLoader(
        _Indexed(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    t = _scoring_training(model, loader)
    state = torch.get_rng_state()
    scores = loop.score_train_images(t, epoch=0)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global stream
    assert {name: m.training for name, m in model.named_modules()} == modes  # frozen BatchNorm stays frozen
    # Independent: each image alone through the model in eval mode (no dropout, running statistics).
    reference = torch.zeros(11, 3, dtype=torch.float64)
    with torch.no_grad():
        ev = _WithBN()
        ev.load_state_dict(model.state_dict())
        ev.eval()
        for i in range(11):
            reference[i] = torch.sigmoid(ev(x[i : i + 1]).logits.double())[0]
    assert scores.shape == (11, 3) and scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), reference, rtol=1e-5, atol=1e-6)


def test_scoring_pass_without_its_loader_is_an_error() -> None:
    t = SimpleNamespace(train_score_loader=None)
    with pytest.raises(RuntimeError, match="scoring loader"):
        loop.score_train_images(t, epoch=0)  # type: ignore[arg-type]
