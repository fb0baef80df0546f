"""SPLC (``splc``): the epoch schedule and which entries it corrects."""

from __future__ import annotations

import torch

import mlcl.losses as L
from tests.helpers.losses import loss_case
from tests.helpers.references import naive_losses as NV


def test_splc_before_start_epoch_is_its_focal_margin_base() -> None:
    logits, targets = loss_case(5, n=8, c=5)
    splc = L.SPLC(tau=0.05, start_epoch=2)  # tau so low that correction would flip every unknown
    splc.set_epoch(1)
    base = NV.splc(logits, targets, 0.05, 1.0, 2.0, False, "mean")
    torch.testing.assert_close(splc(logits, targets), base, rtol=1e-12, atol=0)
    splc.set_epoch(2)
    assert not torch.allclose(splc(logits, targets), base)
    # a threshold of 1 never corrects: equal to the base at any epoch
    never = L.SPLC(tau=1.0)
    never.set_epoch(5)
    torch.testing.assert_close(never(logits, targets), base, rtol=1e-12, atol=0)


def test_splc_never_corrects_observed_negatives() -> None:
    logits = torch.full((2, 2), 8.0, dtype=torch.float64)  # sigmoid ~ 1 > tau everywhere
    targets = torch.tensor([[0, -1], [0, -1]])
    splc = L.SPLC(reduction="none")
    splc.set_epoch(1)
    out = splc(logits, targets)
    p = torch.sigmoid(torch.tensor(8.0, dtype=torch.float64))
    torch.testing.assert_close(out[:, 0], (p**2 * -torch.log1p(-p)).expand(2))  # still a negative
    torch.testing.assert_close(out[:, 1], ((1 - p) ** 2 * -torch.log(p)).expand(2))  # corrected
