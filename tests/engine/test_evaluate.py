"""The evaluation path's report additions: the classes never predicted positive, warned about once."""

from __future__ import annotations

import logging

import pytest
import torch

import mlcl.engine.evaluate as ev


def test_flag_unpredicted_warns_on_the_main_process_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rows = (torch.tensor([[0.9, 0.2], [0.1, 0.3]]), torch.tensor([[1, 1], [0, 0]]), torch.arange(2))
    for main_process, warned in ((True, 1), (False, 0)):
        caplog.clear()
        monkeypatch.setattr(ev, "is_main_process", lambda main_process=main_process: main_process)
        with caplog.at_level(logging.WARNING, logger="mlcl"):
            report = ev.flag_unpredicted({"mAP": 0.5}, rows, ["a", "b"], threshold=0.5, where="the test split")
        assert report == {"mAP": 0.5, "unpredicted_classes": ["b"]}  # every rank gets the list
        assert len(caplog.records) == warned


def test_score_rows_runs_in_inference_mode_and_returns_ordinary_tensors() -> None:
    """The scoring pass's rows may become a loss's state (pseudo-labels): usable by autograd afterwards."""
    from mlcl.models.classifier import ModelOutput

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.modes: list[bool] = []

        def forward(self, x: torch.Tensor) -> ModelOutput:
            self.modes.append(torch.is_inference_mode_enabled())
            return ModelOutput(logits=self.fc(x), embedding=x)

    model = Model()
    loader = [(torch.randn(3, 4), torch.tensor([[1, 0], [0, 1], [1, 1]]), torch.arange(3))]
    scores, _, _ = ev.score_rows(model, loader, torch.device("cpu"), num_classes=2)  # type: ignore[arg-type]
    assert model.modes == [True] and not scores.is_inference()
    w = torch.ones(2, requires_grad=True)
    (scores * w).sum().backward()  # an inference tensor cannot be saved for backward
    torch.testing.assert_close(w.grad, scores.sum(0))
