"""Under DDP (2 gloo processes on CPU) the contrastive losses see the global batch.

Each rank holds a different number of images (3 and 4). The model's gradient after DDP averaging must equal
the single-process gradient of the same loss on the concatenated batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlcl.distributed import all_gather_nograd, gather_with_grad
from mlcl.losses.supcon import ImageSupConLoss, LabelSupConLoss
from tests.helpers.ddp import gloo_group, run_spawned

B, L, D_IN, P = 7, 5, 6, 4
SPLIT = (3, 4)
DENOMINATOR_SIZES = (0, 30)  # 30 > P: fillers are picked from the global batch


class TinyModel(nn.Module):
    """Label-level projections, logits and a pooled image embedding from one input vector per image."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(D_IN, L * P)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.emb(x)
        logits = h.view(-1, L, P).sum(-1)  # only ranks the filler candidates (no gradient through it)
        return F.normalize(h.view(-1, L, P), dim=-1), logits, F.normalize(h, dim=-1)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(B, D_IN, generator=g, dtype=torch.float64)
    u = torch.rand(B, L, generator=g)
    t = torch.where(u < 0.4, 1, torch.where(u < 0.8, 0, -1))
    t[5] = torch.tensor([0, 0, -1, 0, 0])  # an image without present labels
    return x, t


def _model() -> TinyModel:
    torch.manual_seed(7)
    return TinyModel().double()


def _losses(model: nn.Module, x: torch.Tensor, t: torch.Tensor, denominator_size: int) -> torch.Tensor:
    """The losses on the global batch: gathered as the training objective gathers (no-ops without a group)."""
    z, logits, pooled = model(x)
    z, pooled, logits, t = (
        gather_with_grad(z),
        gather_with_grad(pooled),
        all_gather_nograd(logits),
        all_gather_nograd(t),
    )
    label = LabelSupConLoss(tau=0.2, base_tau=0.2, denominator_size=denominator_size)(z, t, logits)
    image = ImageSupConLoss(tau=0.1, base_tau=0.1)(pooled, t)
    return label + 0.3 * image


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, port):
        x, t = _data()
        start = sum(SPLIT[:rank])
        rows = slice(start, start + SPLIT[rank])
        for denominator_size in DENOMINATOR_SIZES:
            model = nn.parallel.DistributedDataParallel(_model())
            loss = _losses(model, x[rows], t[rows], denominator_size)
            loss.backward()
            grads = {k: p.grad.detach().clone() for k, p in model.module.named_parameters()}
            torch.save({"loss": loss.detach(), "grads": grads}, Path(out_dir) / f"d{denominator_size}_rank{rank}.pt")


@pytest.mark.ddp
def test_ddp_gradient_equals_single_process(tmp_path: Path) -> None:
    x, t = _data()
    run_spawned(_worker, str(tmp_path))
    for denominator_size in DENOMINATOR_SIZES:
        model = _model()
        loss = _losses(model, x, t, denominator_size)
        loss.backward()
        for rank in range(2):
            got = torch.load(tmp_path / f"d{denominator_size}_rank{rank}.pt")
            torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-12, atol=1e-14)
            for name, p in model.named_parameters():
                torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-10, atol=1e-13, msg=name)
