"""Under DDP (2 gloo processes on CPU) GR Loss and GPR (with its pseudo-label table) see the global batch.

The ranks hold 3 and 5 images, in a shuffled order of dataset indices. Through the objective's one gather, every
rank must compute the single-process loss of the concatenated batch (GPR reading its table at the gathered
indices), and after DDP's averaging the parameter gradients must equal the single-process ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlcl.engine.objective import Objective
from mlcl.losses import GPRLoss, GRLoss
from mlcl.models.classifier import ModelOutput
from tests.helpers.ddp import gloo_group, run_spawned

B, D_IN, C, N_TRAIN = 8, 5, 4, 12
SPLIT = (3, 5)


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(21)
    x = torch.randn(B, D_IN, generator=g, dtype=torch.float64) * 2
    train_targets = torch.where(torch.rand(N_TRAIN, C, generator=g) < 0.3, 1, -1)
    train_targets[0, 0] = 0  # one observed negative
    index = torch.randperm(N_TRAIN, generator=g)[:B]
    scores = torch.rand(N_TRAIN, C, generator=g, dtype=torch.float64)
    return x, train_targets, index, scores


def _model() -> nn.Module:
    torch.manual_seed(7)
    return nn.Linear(D_IN, C).double()


def _objective(name: str) -> Objective:
    _, train_targets, _, scores = _data()
    if name == "gr":
        base: nn.Module = GRLoss(beta=[0, 10, -2, -8], num_epochs=4)
    else:
        base = GPRLoss(num_epochs=4, pl_threshold=0.6, pl_negative_threshold=0.2, reg=0.05, expected_num_pos=1.5)
    obj = Objective(base)
    obj.init_state(train_targets, seed=0)
    if name == "gpr":
        obj.end_epoch(train_scores=scores)  # a pseudo-label table with 1, 0 and -1
        assert base.pseudo_table is not None and set(base.pseudo_table.unique().tolist()) == {-1, 0, 1}
    obj.begin_epoch(2)
    return obj


def _worker(rank: int, port: int, out_dir: str, name: str) -> None:
    with gloo_group(rank, port):
        x, train_targets, index, _ = _data()
        start = sum(SPLIT[:rank])
        rows = slice(start, start + SPLIT[rank])
        model = nn.parallel.DistributedDataParallel(_model())
        logits = model(x[rows])
        out = ModelOutput(logits=logits, embedding=torch.zeros(SPLIT[rank], 2, dtype=torch.float64))
        terms = _objective(name)(out, train_targets[index[rows]], index[rows])
        terms["loss"].backward()
        grads = {k: p.grad.clone() for k, p in model.module.named_parameters()}
        torch.save({"loss": terms["loss"].detach(), "grads": grads}, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.ddp
@pytest.mark.parametrize("name", ["gr", "gpr"])
def test_ddp_loss_and_gradient_equal_single_process(tmp_path: Path, name: str) -> None:
    x, train_targets, index, _ = _data()
    run_spawned(_worker, str(tmp_path), name)
    model = _model()
    logits = model(x)
    out = ModelOutput(logits=logits, embedding=torch.zeros(B, 2, dtype=torch.float64))
    loss = _objective(name)(out, train_targets[index], index)["loss"]
    loss.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-12, atol=1e-14)
        for key, p in model.named_parameters():
            torch.testing.assert_close(got["grads"][key], p.grad, rtol=1e-10, atol=1e-13, msg=key)
