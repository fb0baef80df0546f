"""A 2-process gloo run of the real training loop gives the same weights and metrics as one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from tests.helpers.ddp import fit_worker, run_spawned
from tests.helpers.synthetic import make_shapes_csv

pytestmark = pytest.mark.ddp


def _overrides(csv: Path, out: Path, loss: str, missing: str) -> list[str]:
    # No BatchNorm (test_convnext uses LayerNorm), no random augmentation and float32 (bf16 autocast, the default
    # on a CPU with native bf16, rounds each rank's partial weight gradients to bf16, so the sum of the two halves
    # differs from the whole batch's beyond this test's 1e-4): the only difference between one process on the
    # batch and two processes on its halves is then the order of floating-point sums.
    return [
        "train.amp=off",
        f"data.train={csv}",
        f"run.out={out}",
        "model.backbone=test_convnext",
        "data.image_size=32",
        "data.augment=none",
        "data.num_workers=0",
        "train.epochs=2",
        "train.batch_size=8",
        "train.device=cpu",
        "run.progress=false",
        "run.tensorboard=false",
        "run.report=false",
        f"loss.name={loss}",
        *(["loss.clml_tau=0.6", "loss.clml_start_epoch=0"] if "clml" in loss else []),  # CLML's own options
        "optim.lr=1e-3",
        f"data.missing={missing}",
    ]


# bce+clml: CLML's batch-level nuclear norms; bce with single-positive labels: a mean over observed entries whose
# count differs between the two halves of a batch (the normaliser must be the global batch's).
# bce with the linear-probe head initialisation: embeddings gathered from both shards (the sampler pads the 36
# training images to 2 x 18 and the evaluation shards repeat none), one probe, the same head on both ranks.
@pytest.mark.parametrize(
    ("loss", "missing", "extra"),
    [
        ("bce+clml", "none", []),
        ("bce", "single-positive", []),
        ("bce", "drop:0.3", ["train.head_init=probe"]),
        ("role", "single-positive", ["loss.options={expected_num_pos: 1.5}"]),  # per-image label estimates
        # EM + APL: the scoring pass over the training images after epoch 1 (each rank scores its shard, every
        # rank gets all rows) and the same pseudo-labels on every rank
        ("em-apl", "single-positive", ["loss.options={warmup_epoch: 1}"]),
    ],
)
def test_two_processes_equal_one(tmp_path: Path, loss: str, missing: str, extra: list[str]) -> None:
    from mlcl.engine.trainer import fit

    csv = make_shapes_csv(tmp_path / "data", n=40)
    single = fit(load_config(None, [*_overrides(csv, tmp_path / "one", loss, missing), *extra]))
    run_spawned(fit_worker, [*_overrides(csv, tmp_path / "two", loss, missing), *extra])
    a = load_checkpoint(tmp_path / "one" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["step"] == b["step"] == 2 * (36 // 8)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    for k in a["objective"] or {}:  # ROLE's table, EM + APL's labels: every rank applies the same update
        torch.testing.assert_close(a["objective"][k], b["objective"][k], rtol=1e-4, atol=1e-5, msg=k)
    import json

    if "train.head_init=probe" in extra:
        assert json.loads((tmp_path / "two" / "probe.json").read_text()) == pytest.approx(
            json.loads((tmp_path / "one" / "probe.json").read_text())
        )
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["n_images"] == single.metrics["n_images"] == 4
    for key in ("mAP", "CF1", "OF1"):
        assert m2[key] == pytest.approx(single.metrics[key], abs=1e-6), key
    # Per-epoch training losses logged by rank 0 (its own shard) are finite in both runs.
    assert all(r["train"]["loss"] == r["train"]["loss"] for r in b["history"])


def _score_worker(rank: int, port: int, out: str) -> None:
    from torch.utils.data import DataLoader

    from mlcl.data.sampler import ResumableSampler
    from mlcl.engine.loop import score_train_images
    from tests.engine.test_loop import _Indexed, _scoring_training, _WithBN
    from tests.helpers.ddp import gloo_group

    with gloo_group(rank, port):
        x, y, model = _scoring_inputs()
        ds = _Indexed(x, y)
        sampler = ResumableSampler(ds, num_replicas=2, rank=rank, shuffle=False, seed=0, drop_last=False)
        t = _scoring_training(model, DataLoader(ds, batch_size=2, sampler=sampler))
        scores = score_train_images(t, epoch=0)  # type: ignore[arg-type]
        assert isinstance(model, _WithBN)
        torch.save(scores, f"{out}/rank{rank}.pt")


def _scoring_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    from tests.engine.test_loop import _WithBN

    torch.manual_seed(2)
    model = _WithBN()
    model.backbone[1].running_mean.normal_()
    return torch.randn(11, 4), torch.ones(11, 3), model


def test_scoring_pass_two_processes_equal_one(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from mlcl.engine.loop import score_train_images
    from tests.engine.test_loop import _Indexed, _scoring_training

    x, y, model = _scoring_inputs()
    one = score_train_images(_scoring_training(model, DataLoader(_Indexed(x, y), batch_size=3)), epoch=0)  # type: ignore[arg-type]
    # 11 images on 2 ranks: the sampler pads one shard; every rank must get the 11 rows once, in index order
    run_spawned(_score_worker, str(tmp_path))
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), one, rtol=1e-6, atol=1e-7)
