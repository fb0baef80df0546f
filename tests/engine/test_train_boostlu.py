"""BoostLU through the engine: the builder gives the loss's alpha to the head, the checkpoint rebuilds the boosted
model (eval, predict, export), an LL-Cp run resumes exactly, and two gloo processes equal one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlcl.engine.build import cam_boost_from_config, model_from_config, objective_from_config, resolve_recipe
from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from mlcl.errors import ConfigError
from mlcl.inference import Predictor
from tests.helpers.ddp import fit_worker, run_spawned
from tests.helpers.resume import QUIET_CPU, assert_equal_states, full_and_resumed
from tests.helpers.synthetic import make_shapes_csv

FAST = QUIET_CPU


def test_builder_gives_the_loss_alpha_to_the_head() -> None:
    base = ["model.backbone=resnet10t", "model.pretrained=false"]
    cases = [
        ("boostlu-ll-r", [], 5.0),
        ("boostlu-ll-cp+clml", [], 5.0),
        ("boostlu-ll-ct", ["loss.options={alpha: 3}"], 3.0),
        ("ll-r", [], 1.0),
        ("bce", [], 1.0),
    ]
    for name, extra, alpha in cases:
        cfg = load_config(None, [*base, f"loss.name={name}", *extra])
        assert cam_boost_from_config(cfg) == alpha, name
        assert model_from_config(cfg, 4).cam_boost == alpha, name
        objective_from_config(cfg)  # the loss accepts its options (alpha among them)
        resolved = resolve_recipe(cfg)
        assert resolved.loss.options.get("alpha") == (alpha if alpha != 1 else None), name  # recorded
    with pytest.raises(ConfigError, match=r"`model\.head`='mulcon'.*class activation map"):
        model_from_config(load_config(None, [*base, "loss.name=boostlu-ll-r", "model.head=mulcon"]), 4)
    with pytest.raises(ConfigError, match=r"`loss\.options\.alpha`=0"):
        model_from_config(load_config(None, [*base, "loss.name=boostlu-ll-r", "loss.options={alpha: 0}"]), 4)
    with pytest.raises(ConfigError, match="alpha"):
        objective_from_config(load_config(None, [*base, "loss.name=ll-r", "loss.options={alpha: 5}"]))


def test_cli_run_on_builtin_then_eval_predict_export(tmp_path: Path) -> None:
    """``--loss boostlu-ll-r --epochs 2``: the checkpoint records alpha; every consumer rebuilds the boosted model."""
    from mlcl.cli import main
    from mlcl.export import export_checkpoint

    run = tmp_path / "run"
    argv = ["train", "--data", "builtin", "--loss", "boostlu-ll-r", "--epochs", "2", "--image-size", "32"]
    argv += ["--backbone", "resnet10t", "--out", str(run), "--device", "cpu", "--batch-size", "16"]
    argv += ["-o", "train.max_steps_per_epoch=4", "-o", "data.num_workers=0", "-o", "run.progress=false"]
    argv += [
        "-o",
        "run.tensorboard=false",
        "-o",
        "run.report=false",
        "-o",
        "optim.lr=1e-3",
        "-o",
        "train.ema=false",
        "-o",
        "train.eval_every=2",
    ]
    assert main(argv) == 0
    state = load_checkpoint(run / "best.pt")
    assert state["config"]["loss"]["name"] == "boostlu-ll-r" and state["config"]["loss"]["options"]["alpha"] == 5.0
    pred = Predictor.from_checkpoint(run / "best.pt", device="cpu")
    assert pred.model.cam_boost == 5.0

    def boosted(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cam = pred.model.class_activation_map(pred.model.backbone(x))
            return torch.sigmoid(torch.where(cam > 0, 5 * cam, cam).mean((2, 3)))

    x64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # a 2x2 map
    torch.testing.assert_close(pred.predict_tensor(x64), boosted(x64), rtol=1e-5, atol=1e-6)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # the run's size: a 1x1 map
    want = boosted(x)
    meta = export_checkpoint(run / "best.pt", tmp_path / "m.onnx", fmt="onnx")
    assert meta["parity_max_abs_diff"] <= 1e-4
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert main(["eval", str(run / "best.pt"), "--data", "builtin", "--device", "cpu"]) == 0


def _overrides(csv: Path, out: Path, extra: list[str]) -> list[str]:
    # resnet10t with frozen BatchNorm statistics and no augmentation: one process on a batch and two on its halves
    # then differ only in the order of floating-point sums. 64 px gives a 2x2 class activation map.
    return [
        *FAST,
        f"data.train={csv}",
        f"run.out={out}",
        "model.backbone=resnet10t",
        "data.image_size=64",
        "data.augment=none",
        "train.batch_size=8",
        "train.freeze_bn=true",
        "train.ema=false",
        "optim.lr=1e-3",
        "data.missing=single-positive",
        "loss.name=boostlu-ll-cp",
        "loss.options={delta_rel: 0.05}",
        *extra,
    ]


def test_ll_cp_resume_equals_uninterrupted(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = ["train.epochs=3", "train.seed=3"]
    r = full_and_resumed(lambda out, x: load_config(None, _overrides(csv, out, x)), tmp_path, extra, stop_after=2)
    full, resumed, a, b = r.full, r.resumed, r.a, r.b
    assert b["epoch"] == 3 and b["step"] == a["step"]
    assert_equal_states(a, b, "model")
    table = a["objective"]["base.label_table"]
    assert torch.equal(table, b["objective"]["base.label_table"])
    assert int((table == 1).sum()) > table.shape[0]  # one positive per image, plus LL-Cp's corrections
    assert resumed.metrics == full.metrics


@pytest.mark.ddp
def test_two_processes_equal_one(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    # SGD: Adam's normalisation would blow the summation-order differences of near-zero gradients up to lr.
    # float32: under bf16 autocast each rank's partial gradients are rounded, and 2 ranks differ from 1 by ~1e-3
    extra = ["train.epochs=2", "optim.name=sgd", "optim.lr=0.05", "train.amp=off"]
    single = fit(load_config(None, _overrides(csv, tmp_path / "one", extra)))
    run_spawned(fit_worker, _overrides(csv, tmp_path / "two", extra))
    a = load_checkpoint(tmp_path / "one" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["step"] == b["step"] == 2 * (36 // 8)
    table = a["objective"]["base.label_table"]
    assert torch.equal(table, b["objective"]["base.label_table"])  # the same corrections on every rank
    assert int((table == 1).sum()) > table.shape[0]  # LL-Cp corrected entries in the second epoch
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    import json

    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("mAP", "CF1", "OF1"):
        assert m2[key] == pytest.approx(single.metrics[key], abs=1e-6), key
