"""The BCE losses (``bce``, ``bce-an``): family-specific checks beyond the contract sweep."""

from __future__ import annotations

import math

import pytest
import torch

import mlcl.losses as L


def test_clamp_changes_values_only_for_extreme_logits() -> None:
    logits = torch.tensor([[-30.0, 0.5, 30.0]], dtype=torch.float64)
    targets = torch.tensor([[1, 1, 0]])
    exact = L.build_loss("bce-an", reduction="none")(logits, targets)
    clamped = L.build_loss("bce-an", reduction="none", clamp_eps=1e-8)(logits, targets)
    assert exact[0, 0].item() == pytest.approx(30.0, rel=1e-12)  # -log(sigmoid(-30)), no clamp
    assert clamped[0, 0].item() == pytest.approx(-math.log(1e-8), rel=1e-12)
    assert clamped[0, 1] == exact[0, 1]
