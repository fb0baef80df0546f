"""Under DDP (2 gloo processes on CPU) CLML is computed on the global batch.

The ranks hold 3 and 5 images. Every rank must compute the single-process loss of the concatenated batch;
the gradient reaching a rank's own features is world_size times the single-process gradient of those rows
(the gather's backward all-reduces), so that after DDP's averaging the parameter gradient equals the
single-process gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlcl.distributed import all_gather_nograd, gather_with_grad
from mlcl.losses import CLML
from tests.helpers.ddp import gloo_group, run_spawned

B, D_IN, D, C = 8, 5, 6, 4
SPLIT = (3, 5)


class TinyModel(nn.Module):
    """Features and logits from one input vector per image."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Linear(D_IN, D)
        self.head = nn.Linear(D, C)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.feat(x))
        return f, self.head(f)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(B, D_IN, generator=g, dtype=torch.float64) * 2
    u = torch.rand(B, C, generator=g)
    t = torch.where(u < 0.4, 1, torch.where(u < 0.7, 0, -1))
    return x, t


def _model() -> TinyModel:
    torch.manual_seed(5)
    model = TinyModel().double()
    with torch.no_grad():
        model.head.bias.fill_(0.8)  # some sigmoid(logit) > tau: the correction uses the gathered logits
    return model


def _criterion() -> CLML:
    crit = CLML(tau=0.7, lam=1.3)
    crit.set_epoch(1)
    return crit


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, port):
        x, t = _data()
        start = sum(SPLIT[:rank])
        rows = slice(start, start + SPLIT[rank])
        model = nn.parallel.DistributedDataParallel(_model(), find_unused_parameters=True)  # the head gets no grad
        feats, logits = model(x[rows])
        feats.retain_grad()
        # the global batch, gathered as the training objective gathers it
        loss = _criterion()(gather_with_grad(feats), all_gather_nograd(logits), all_gather_nograd(t[rows]))
        loss.backward()
        grads = {
            k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in model.module.named_parameters()
        }
        torch.save(
            {"loss": loss.detach(), "grads": grads, "feat_grad": feats.grad.detach().clone()},
            Path(out_dir) / f"rank{rank}.pt",
        )


@pytest.mark.ddp
def test_ddp_gradient_equals_single_process(tmp_path: Path) -> None:
    x, t = _data()
    run_spawned(_worker, str(tmp_path))
    model = _model()
    feats, logits = model(x)
    feats.retain_grad()
    crit = _criterion()
    loss = crit(feats, logits, t)
    assert crit.epoch >= crit.start_epoch
    loss.backward()
    assert model.head.weight.grad is None  # CLML sends nothing into the logits
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-12, atol=1e-14)
        start = sum(SPLIT[:rank])
        torch.testing.assert_close(
            got["feat_grad"], 2 * feats.grad[start : start + SPLIT[rank]], rtol=1e-10, atol=1e-13
        )
        for name, p in model.named_parameters():
            expected = torch.zeros_like(p) if p.grad is None else p.grad
            torch.testing.assert_close(got["grads"][name], expected, rtol=1e-10, atol=1e-13, msg=name)
