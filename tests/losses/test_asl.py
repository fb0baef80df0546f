"""The asymmetric loss (``asl``): family-specific checks beyond the contract sweep."""

from __future__ import annotations

import torch

import mlcl.losses as L
from tests.helpers.losses import REDUCTIONS, loss_case


def test_asl_with_zero_gammas_and_clip_is_assume_negative_bce() -> None:
    logits, targets = loss_case(4, n=6, c=5)
    for reduction in REDUCTIONS:
        za, zb = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        asl = L.AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0, eps=None, reduction=reduction)(za, targets)
        bce = L.AssumeNegativeBCELoss(reduction=reduction)(zb, targets)
        torch.testing.assert_close(asl, bce, rtol=1e-14, atol=0)
        asl.sum().backward()
        bce.sum().backward()
        torch.testing.assert_close(za.grad, zb.grad, rtol=1e-14, atol=0)
