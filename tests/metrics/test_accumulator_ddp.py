"""MetricAccumulator under a 2-process gloo group equals one process on the whole set.

Rank 0 and rank 1 get uneven shards (13 and 10 rows, in batches of different sizes); rank 1 also gets a padded
copy of a sample rank 0 has (as DistributedSampler does), which must be counted once. A second accumulator has
no rows at all on rank 1. The gathered rows are compared with the original data, and the report with scikit-learn
and with the single-process report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlcl.metrics import MetricAccumulator, compute_metrics
from tests.helpers.ddp import gloo_group, run_spawned

N, C = 23, 5
NAMES = [f"c{i}" for i in range(C)]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    probs = (torch.rand(N, C, generator=gen) * 10).round() / 10  # ties included
    targets = (torch.rand(N, C, generator=gen) < 0.35).long()
    targets[torch.rand(N, C, generator=gen) < 0.2] = -1
    targets[0, 0] = 1  # every class has a positive somewhere
    targets[1, 1:] = 1
    return probs, targets


SHARDS = {
    0: [torch.tensor([0, 2, 4, 6, 8]), torch.tensor([10, 12, 14]), torch.tensor([16, 18, 20, 22, 19])],
    1: [torch.tensor([1, 3, 5, 7, 9, 11, 13]), torch.tensor([15, 17, 21, 0])],  # 0 is a padded duplicate
}


def _worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, port):
        probs, targets = _data()
        acc = MetricAccumulator(C)
        for idx in SHARDS[rank]:
            acc.update(probs[idx], targets[idx], idx)
        gathered = acc.gathered()
        report = acc.compute(NAMES, threshold=0.5, ap_variant="nonint")

        lonely = MetricAccumulator(C)  # rank 1 contributes nothing
        if rank == 0:
            lonely.update(probs, targets, torch.arange(N))
        lonely_report = lonely.compute(NAMES)
        torch.save(
            {"gathered": gathered, "report": report, "lonely": lonely_report},
            Path(out_dir) / f"rank{rank}.pt",
        )


@pytest.mark.ddp
def test_accumulator_two_process_gloo_equals_single_process(tmp_path: Path) -> None:
    from sklearn.metrics import average_precision_score  # not imported by the spawned workers

    run_spawned(_worker, str(tmp_path))
    probs, targets = _data()
    single = compute_metrics(probs, targets, NAMES)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        scores_g, targets_g, idx_g = out["gathered"]
        assert torch.equal(idx_g, torch.arange(N))
        assert torch.equal(scores_g, probs)
        assert torch.equal(targets_g.long(), targets)
        assert out["report"] == single
        assert out["lonely"] == single
        assert out["report"]["n_images"] == N
        for c, name in enumerate(NAMES):
            keep = targets[:, c] != -1
            ref = average_precision_score(targets[keep, c].numpy(), probs[keep, c].double().numpy())
            assert out["report"]["per_class_AP"][name] == pytest.approx(ref, abs=1e-6)
        assert out["report"]["mAP"] == pytest.approx(np.mean(list(out["report"]["per_class_AP"].values())), abs=1e-12)
