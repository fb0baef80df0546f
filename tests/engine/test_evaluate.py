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
