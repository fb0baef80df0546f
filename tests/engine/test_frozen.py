"""Frozen-trunk training (``train.freeze``): a run equals the same trainable part trained by a plain loop on features
computed by hand; the frozen part never moves; exact resume; every kind of objective; bad values."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mlcl.data.dataset import ImageDataset
from mlcl.engine.build import build_training
from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import Config, load_config
from mlcl.engine.trainer import fit
from mlcl.errors import ConfigError
from tests.helpers.paths import REPO
from tests.helpers.resume import QUIET_CPU, assert_equal_states, full_and_resumed
from tests.helpers.synthetic import make_shapes_csv

CPU = torch.device("cpu")
BASE = [*QUIET_CPU, "model.backbone=resnet10t", "train.amp=off", "data.image_size=32", "train.batch_size=8"]


def _cfg(out: Path, csv: Path, extra: list[str]) -> Config:
    return load_config(None, [*BASE, f"data.train={csv}", f"run.out={out}", *extra])


def _batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The training order of an epoch: torch's ``DistributedSampler`` on one process (a permutation seeded by
    ``seed + epoch``), cut into full batches."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i : i + batch] for i in range(0, n - n % batch, batch)]


@torch.no_grad()
def _eval_images(t: object) -> torch.Tensor:
    ds = ImageDataset(t.data.train, t.eval_transform)  # type: ignore[attr-defined]
    return torch.stack([ds[i][0] for i in range(len(ds))])


def _backbone_state(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def test_freeze_all_equals_a_linear_head_trained_on_precomputed_features(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = ["train.freeze=all", "train.epochs=2", "train.ema=false", "optim.schedule=constant", "optim.lr=0.01"]
    extra += ["optim.weight_decay=0", "train.seed=5"]
    cfg = _cfg(tmp_path / "run", csv, extra)
    t0 = build_training(cfg, CPU, fresh=True)  # the run's initial weights and data
    init = copy.deepcopy(t0.model.state_dict())
    result = fit(cfg)
    # The reference: pooled embeddings of the evaluation images by the model itself, stored in float16, and a
    # linear layer trained on them by a plain AdamW loop over the same batches.
    model = t0.model.eval()
    with torch.no_grad():  # (in batches of 8, as the run computes them: a convolution's last bits depend on the batch)
        feats = torch.cat([model(x).embedding for x in _eval_images(t0).split(8)]).half().float()
    y = t0.data.train.targets.float()
    w = init["fc.weight"].clone().requires_grad_(True)
    b = init["fc.bias"].clone().requires_grad_(True)
    opt = torch.optim.AdamW([w, b], lr=0.01, weight_decay=0.0)
    for epoch in range(2):
        for rows in _batches(len(y), 8, 5, epoch):
            loss = F.binary_cross_entropy_with_logits(feats[rows] @ w.T + b, y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    last = load_checkpoint(result.run_dir / "last.pt")["model"]
    torch.testing.assert_close(last["fc.weight"], w.detach(), rtol=1e-4, atol=1e-4)  # 8 steps of 0.01 move it ~0.08
    torch.testing.assert_close(last["fc.bias"], b.detach(), rtol=1e-4, atol=1e-4)
    assert not torch.equal(last["fc.weight"], init["fc.weight"])
    for k, v in _backbone_state(init, ("backbone.",)).items():  # weights and BatchNorm statistics unchanged
        assert torch.equal(last[k], v), k
    report = json.loads((result.run_dir / "freeze.json").read_text())
    assert report["cached"] == "pooled embedding" and report["shape"] == [512] and report["copies"] == 1
    assert report["storage"] == "memory" and report["build_s"] is not None


def test_partial_freeze_equals_the_last_stages_trained_on_the_first_stages_output(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = ["train.freeze=2", "train.epochs=2", "train.ema=false", "optim.schedule=constant", "optim.lr=0.05"]
    extra += ["optim.name=sgd", "optim.weight_decay=0", "train.seed=2"]
    cfg = _cfg(tmp_path / "run", csv, extra)
    t0 = build_training(cfg, CPU, fresh=True)
    init = copy.deepcopy(t0.model.state_dict())
    result = fit(cfg)
    ref = copy.deepcopy(t0.model)
    m = ref.backbone.model
    m.eval()
    with torch.no_grad():  # a ResNet's stem and first two stages, written out; eval mode; float16 storage
        h = torch.cat([m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x)))))) for x in _eval_images(t0).split(8)])
        h = h.half().float()
    y = t0.data.train.targets.float()
    params = [*m.layer3.parameters(), *m.layer4.parameters(), *ref.fc.parameters()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    m.layer3.train()
    m.layer4.train()
    for epoch in range(2):
        for rows in _batches(len(y), 8, 2, epoch):
            pooled = m.layer4(m.layer3(h[rows])).mean((2, 3))
            loss = F.binary_cross_entropy_with_logits(ref.fc(pooled), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    last = load_checkpoint(result.run_dir / "last.pt")["model"]
    parts = ("backbone.model.layer3", "backbone.model.layer4", "fc.")
    trained = {k: v for k, v in ref.state_dict().items() if k.startswith(parts)}
    for k, v in trained.items():  # the trained stages' weights and BatchNorm statistics, and the head
        torch.testing.assert_close(last[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert not torch.equal(last["backbone.model.layer3.0.conv1.weight"], init["backbone.model.layer3.0.conv1.weight"])
    frozen = ("backbone.model.conv1", "backbone.model.bn1", "backbone.model.layer1", "backbone.model.layer2")
    for k, v in _backbone_state(init, frozen).items():
        assert torch.equal(last[k], v), k
    report = json.loads((result.run_dir / "freeze.json").read_text())
    assert report["shape"] == [128, 4, 4] and report["num_stages"] == 4
    assert report["frozen_modules"] == ["act1", "bn1", "conv1", "layer1", "layer2", "maxpool"]


def test_frozen_trunk_resumes_exactly_with_clml_and_cached_flips(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = ["train.freeze=2", "data.augment=flip", "loss.name=hill+clml", "train.epochs=3", "train.seed=3"]
    r = full_and_resumed(lambda out, x: _cfg(out, csv, x), tmp_path, extra)
    assert r.cut["epoch"] == 1 and r.b["epoch"] == 3 and r.b["step"] == r.a["step"]
    assert_equal_states(r.a, r.b, "model", "ema")
    assert r.resumed.metrics == r.full.metrics
    config = load_checkpoint(tmp_path / "full" / "last.pt")["config"]["train"]
    assert config["freeze_copies"] == 2 and config["freeze_cache"] == "memory"


def test_single_positive_loss_with_its_own_state_on_a_frozen_backbone(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = ["train.freeze=all", "data.missing=single-positive", "loss.name=role", "train.epochs=2"]
    cfg = _cfg(tmp_path / "run", csv, extra)
    init = build_training(cfg, CPU, fresh=True).model.state_dict()
    result = fit(cfg)
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["objective"] and 0.0 <= result.metrics["mAP"] <= 1.0
    for k, v in _backbone_state(init, ("backbone.",)).items():
        assert torch.equal(last["model"][k], v), k


def test_mulcon_stages_on_a_frozen_backbone(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = [
        "train.method=mulcon", "train.freeze=all", "data.augment=flip", "mulcon.stage1_epochs=1",
        "mulcon.stage2_epochs=1", "mulcon.stage2_batch_size=8", "model.head_dim=32", "model.head_heads=4",
        "model.proj_hidden=32", "model.proj_dim=16",
    ]  # fmt: skip
    result = fit(_cfg(tmp_path / "run", csv, extra))
    s1 = json.loads((result.run_dir / "stage1" / "freeze.json").read_text())
    assert s1["cached"] == "feature map" and s1["shape"] == [512, 1, 1] and s1["copies"] == 2
    a = load_checkpoint(result.run_dir / "stage1" / "last.pt")["model"]
    b = load_checkpoint(result.run_dir / "stage2" / "last.pt")["model"]
    for k in _backbone_state(a, ("backbone.",)):
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["head.classifier_weight"], b["head.classifier_weight"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9", "`train.freeze`=9: resnet10t has 4 stages; give 1 to 4"),
        ("0", "`train.freeze`=0: give `none`, `all` or a number of backbone stages >= 1"),
        ("most", "`train.freeze` must be one of none, all or int, got 'most'"),
    ],
)
def test_bad_freeze_values_are_one_line_errors_and_leave_no_run(tmp_path: Path, value: str, message: str) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=16)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = ["train", "--data", str(csv), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    argv += ["--no-progress", "-o", "data.image_size=32", "-o", f"train.freeze={value}"]
    proc = subprocess.run(
        [sys.executable, "-m", "mlcl", *argv],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_copies_that_would_be_identical_are_refused(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=16)
    with pytest.raises(ConfigError, match="`train.freeze_copies`=3 with `data.augment=none`"):
        fit(_cfg(tmp_path / "a", csv, ["train.freeze=all", "train.freeze_copies=3"]))
    with pytest.raises(ConfigError, match="`data.views`=2 .* no augmentation"):
        fit(_cfg(tmp_path / "b", csv, ["train.freeze=all", "data.views=2"]))


def test_config_validate_checks_the_stage_count_and_mulcons_second_stage(tmp_path: Path) -> None:
    from mlcl.engine.validate import validate_config_file

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: tf_efficientnet_lite0\ntrain:\n  freeze: 8\n")
    with pytest.raises(ConfigError, match="`train.freeze`=8: tf_efficientnet_lite0 has 7 stages; give 1 to 7"):
        validate_config_file(bad)
    good = tmp_path / "good.yaml"
    good.write_text("model:\n  backbone: tf_efficientnet_lite0\ntrain:\n  freeze: 7\n")
    assert validate_config_file(good).startswith("ok")
    mulcon = tmp_path / "mulcon.yaml"
    mulcon.write_text("train:\n  method: mulcon\n  freeze: all\n")
    with pytest.raises(ConfigError, match="stage 2 of `train.method=mulcon`: `data.views`=2"):
        validate_config_file(mulcon)


def test_the_probe_of_a_frozen_backbone_is_fitted_on_the_cached_embeddings(tmp_path: Path) -> None:
    """Under ``freeze=all`` the probe reads the cache (no second pass over the images): the cache holds the model's
    own pooled embeddings of the evaluation images in float16, and the head is the probe fitted on them."""
    from mlcl.engine.probe import fit_linear_probe

    csv = make_shapes_csv(tmp_path / "data", n=40)
    cfg = _cfg(tmp_path / "run", csv, ["train.freeze=all", "train.head_init=probe", "optim.lr=0.001"])
    t = build_training(cfg, CPU, fresh=True)
    assert t.train_set.cache is not None  # filled for the probe, before the first epoch
    model = copy.deepcopy(t.model).eval()
    with torch.no_grad():
        feats = model(_eval_images(t)).embedding
    cached = t.train_set.cache.data[0].float()
    torch.testing.assert_close(cached, feats, rtol=2e-3, atol=1e-4)  # float16 rounding
    w, b = fit_linear_probe(cached, t.data.train.targets.float(), c=cfg.train.probe_c)
    torch.testing.assert_close(t.model.fc.weight.detach(), w.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t.model.fc.bias.detach(), b.float(), rtol=1e-4, atol=1e-5)


def test_validation_runs_the_trained_part_on_the_validation_images_cached_features(tmp_path: Path) -> None:
    from mlcl.engine.evaluate import score_rows

    csv = make_shapes_csv(tmp_path / "data", n=40)
    t = build_training(_cfg(tmp_path / "run", csv, ["train.freeze=2", "data.val_fraction=0.25"]), CPU, fresh=True)
    other = copy.deepcopy(t.model)  # another copy of the weights (an EMA's): its own trained stages are used
    with torch.no_grad():
        for p in other.backbone.model.layer3.parameters():
            p.mul_(1.5)
    scores = []
    for module in (t.model, other):
        cached, _, index = score_rows(t.eval_net(module), t.val_loader, CPU, num_classes=4)
        images, _, index2 = score_rows(module, t.loader(t.data.val), CPU, num_classes=4)
        assert torch.equal(index, index2) and len(index) == 10
        torch.testing.assert_close(cached, images, rtol=0, atol=2e-3)  # float16 rounding of the cached maps
        scores.append(cached)
    assert t.frozen.val_build_s is not None and t.frozen.n_val == 10
    assert (scores[0] - scores[1]).abs().max() > 1e-2
