"""The single-positive losses (WAN, EPR): family-specific checks beyond the contract sweep."""

from __future__ import annotations

import torch

import mlcl.losses as L
from tests.helpers.losses import loss_case
from tests.helpers.references import naive_losses as NV


def test_wan_default_gamma_is_one_over_c_minus_one() -> None:
    logits, targets = loss_case(7, n=4, c=6)
    torch.testing.assert_close(L.WeakAssumeNegativeLoss()(logits, targets), NV.wan(logits, targets, 0.2, "mean"))
