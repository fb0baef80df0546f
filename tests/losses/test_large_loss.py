"""The large-loss methods (``ll-r``, ``ll-ct``, ``ll-cp``): schedules and selection."""

from __future__ import annotations

import math

import pytest
import torch

import mlcl.losses as L
from mlcl.losses import functional as LF
from mlcl.losses.base import PerImageState
from tests.helpers.losses import loss_case
from tests.helpers.references import naive_losses as NV


def test_large_loss_schedules_and_selection() -> None:
    logits, targets = loss_case(6, n=10, c=6)
    llr, llct, llcp = (
        L.LargeLossRejection(0.05),
        L.LargeLossTemporaryCorrection(0.05),
        L.LargeLossPermanentCorrection(0.05),
    )
    for epoch, r_rate, cp_rate in [(0, 0.0, 0.0), (1, 0.05, 0.05), (3, 0.15, 0.05)]:
        for m in (llr, llct, llcp):
            m.set_epoch(epoch)
        assert llr.rate == pytest.approx(r_rate) and llct.rate == pytest.approx(r_rate)
        assert llcp.rate == pytest.approx(cp_rate)
        chosen = NV.large_loss_selection(logits, targets, cp_rate)
        mask = llcp.select(logits, targets)
        assert {tuple(ij) for ij in mask.nonzero().tolist()} == chosen
        assert len(chosen) == min(math.ceil(cp_rate * 60 - 1e-9), int((targets == -1).sum()))
        assert torch.all(targets[mask] == -1)  # only unknown entries are ever selected
        # LL-Cp records the selection of the rows it is given and writes it back to its table at the epoch's end
        llcp.init_state(targets, seed=0)
        index = torch.arange(targets.shape[0])
        expected = LF.large_loss(logits, targets, rate=cp_rate, scheme="correct", selection=mask)
        torch.testing.assert_close(llcp(logits, llcp.current_targets(targets, index), index), expected)
        llcp.end_epoch()
        table = llcp.current_targets(targets, index)
        assert torch.equal(table == 1, (targets == 1) | mask)
    assert (
        isinstance(llcp, PerImageState) and not isinstance(llr, PerImageState) and not isinstance(llct, PerImageState)
    )
    # LL-R: rejected entries get no gradient; at epoch 0 every method is assume-negative BCE
    llr.set_epoch(3)
    z = logits.clone().requires_grad_()
    llr(z, targets).backward()
    assert z.grad is not None and torch.all(z.grad[llr.select(logits, targets)] == 0)
    for m in (llr, llct, llcp):
        m.set_epoch(0)
        torch.testing.assert_close(m(logits, targets), L.AssumeNegativeBCELoss()(logits, targets))
    with pytest.raises(ValueError, match="selection"):
        LF.large_loss(logits, targets, rate=0.1, scheme="correct", selection=torch.zeros(2, 2, dtype=torch.bool))


def test_large_loss_selection_caps_k_at_the_unknown_count() -> None:
    logits = torch.zeros(2, 3, dtype=torch.float64)
    targets = torch.tensor([[1, -1, 0], [0, 0, 1]])
    assert LF.large_loss_selection(logits, targets, 1.0).sum().item() == 1
