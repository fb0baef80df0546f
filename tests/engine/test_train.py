"""End-to-end training: learning, exact resume, checkpoints, evaluation and prediction through the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from mlcl.inference import Predictor
from tests.helpers.resume import QUIET_CPU, assert_equal_states, full_and_resumed
from tests.helpers.synthetic import make_shapes_csv

FAST = [*QUIET_CPU, "model.backbone=resnet10t"]


def _cfg(out: Path, data: str, extra: list[str]) -> object:
    return load_config(None, [*FAST, f"data.train={data}", f"run.out={out}", *extra])


def test_builtin_training_learns(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path / "run",
        "builtin",
        ["train.epochs=1", "train.batch_size=32", "train.max_steps_per_epoch=60", "optim.lr=3e-3", "train.ema=false"],
    )
    result = fit(cfg)
    m = result.metrics
    assert m["split"] == "test" and m["n_images"] == 1000
    # The label prior (fraction of positives per class) is the expected mAP of a random ranking: about 0.19.
    from mlcl.data.builtin import load_builtin

    prior = load_builtin("test").targets.float().mean().item()
    assert m["mAP"] > prior + 0.05, (m["mAP"], prior)
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert 0.0 <= m[key] <= 1.0
    run = result.run_dir
    for name in ("config.yaml", "log.jsonl", "metrics.json", "best.pt", "last.pt"):
        assert (run / name).is_file(), name
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["class_names"] == [str(i) for i in range(10)] and ckpt["version"]


def test_small_training_run_learns(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=120)
    cfg = _cfg(
        tmp_path / "run",
        str(csv),
        ["train.epochs=4", "train.batch_size=16", "data.image_size=32", "optim.lr=3e-3", "data.val_fraction=0.25"],
    )
    result = fit(cfg)
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert log[-1]["train"]["loss"] < 0.7 * log[0]["train"]["loss"]
    # Chance mAP is the label prior (about 0.5 for these images); the colours are easy to learn.
    assert result.metrics["mAP"] > 0.85, result.metrics["mAP"]
    assert not (result.run_dir / "report.html").exists()  # run.report=false (QUIET_CPU)


def test_a_run_writes_its_report_unless_told_not_to(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    tiny = ["train.epochs=1", "train.batch_size=8", "data.image_size=16", "train.max_steps_per_epoch=1"]
    written = fit(_cfg(tmp_path / "on", str(csv), [*tiny, "run.report=true"])).run_dir / "report.html"
    assert written.is_file() and "<html" in written.read_text(encoding="utf-8").lower()
    assert not (fit(_cfg(tmp_path / "off", str(csv), tiny)).run_dir / "report.html").exists()


@pytest.mark.parametrize(
    "recipe",
    [[], ["train.head_init=probe", "train.freeze_bn=true", "optim.lr=2e-4"]],  # + the pretrained-backbone recipe
    ids=["plain", "probe-frozen-bn"],
)
def test_resume_equals_uninterrupted(tmp_path: Path, recipe: list[str]) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = [
        "train.epochs=3",
        "train.batch_size=8",
        "data.image_size=32",
        "data.augment=default",
        "loss.name=hill+clml",
        "train.seed=3",
        *recipe,
    ]
    r = full_and_resumed(lambda out, x: _cfg(out, str(csv), x), tmp_path, extra)
    assert r.cut["epoch"] == 1
    assert r.b["epoch"] == 3 and r.b["step"] == r.a["step"]
    assert_equal_states(r.a, r.b, "model", "ema")
    assert r.resumed.metrics == r.full.metrics


def test_predictor_and_holdout_split(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    result = fit(_cfg(tmp_path / "run", str(csv), ["train.epochs=1", "train.batch_size=8", "data.image_size=32"]))
    split = json.loads((result.run_dir / "split.json").read_text())
    assert len(split["val"]) == 4 and len(split["train"]) == 36 and not set(split["val"]) & set(split["train"])
    assert result.metrics["split"] == "val" and result.metrics["n_images"] == 4
    pred = Predictor.from_checkpoint(result.run_dir / "best.pt")
    images = sorted((tmp_path / "data" / "images").glob("*.png"))[:5]
    probs = pred.predict([str(p) for p in images])
    assert probs.shape == (5, 4) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    # The same images through the evaluation transform give the same scores as a direct forward pass.
    x = torch.stack(
        [pred.transform(__import__("PIL.Image", fromlist=["Image"]).open(p).convert("RGB")) for p in images]
    )
    with torch.no_grad():
        direct = torch.sigmoid(pred.model(x).logits)
    torch.testing.assert_close(probs, direct)
    labels = pred.decide(probs, top_k=2)
    assert all(len(row) == 2 for row in labels)


def test_missing_labels_applied_to_training_only(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    result = fit(
        _cfg(
            tmp_path / "run",
            str(csv),
            [
                "train.epochs=1",
                "train.batch_size=8",
                "data.image_size=32",
                "data.missing=single-positive",
                "loss.name=bce-an",
            ],
        )
    )
    summary = json.loads((result.run_dir / "missing.json").read_text())
    assert summary  # the protocol's report is recorded
    # Validation targets stay complete: every entry of the 4 held-out images is known.
    assert result.metrics["n_images"] == 4


def test_mulcon_two_stages(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = [
        "train.method=mulcon",
        "mulcon.stage1_epochs=1",
        "mulcon.stage2_epochs=1",
        "mulcon.stage2_batch_size=8",
        "train.batch_size=8",
        "data.image_size=32",
        "model.head_dim=32",
        "model.head_heads=4",
        "model.proj_hidden=32",
        "model.proj_dim=16",
        "model.head_num_sab=1",
    ]
    result = fit(_cfg(tmp_path / "run", str(csv), extra))
    s2 = load_checkpoint(tmp_path / "run" / "stage2" / "last.pt")
    assert s2["config"]["loss"]["contrastive"] == "label" and s2["config"]["data"]["views"] == 2
    log = [json.loads(x) for x in (tmp_path / "run" / "stage2" / "log.jsonl").read_text().splitlines()]
    assert "contrastive" in log[0]["train"] and log[0]["train"]["contrastive"] > 0
    assert (tmp_path / "run" / "metrics.json").is_file() and 0 <= result.metrics["mAP"] <= 1
    pred = Predictor.from_checkpoint(tmp_path / "run")
    probs, maps = pred.attention_maps(str(sorted((tmp_path / "data" / "images").glob("*.png"))[0]))
    assert maps.shape == (4, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6


@pytest.mark.parametrize("bad", ["optim.lr=-", "loss.name=nonsense"])
def test_bad_config_is_reported_before_training(tmp_path: Path, bad: str) -> None:
    from mlcl.errors import ConfigError

    with pytest.raises(ConfigError):
        fit(_cfg(tmp_path / "run", "builtin", [bad]))


@pytest.mark.parametrize(("loss", "warns"), [("bce", True), ("bce+clml", True), ("bce-an", False)])
def test_fit_warns_once_about_positive_only_labels_with_a_loss_that_ignores_unknowns(
    tmp_path: Path, loss: str, warns: bool
) -> None:
    """``mlcl.fit`` (not only ``mlcl train``) warns, once and before loading anything, that the run would learn
    that every label is present; the run then stops at its missing label file."""
    import warnings

    import mlcl
    from mlcl.errors import MlclError

    cfg = _cfg(tmp_path / "run", str(tmp_path / "none.csv"), ["data.missing=single-positive", f"loss.name={loss}"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises((MlclError, OSError), match="none.csv"):
        warnings.simplefilter("always")
        mlcl.fit(cfg)
    ours = [w for w in caught if issubclass(w.category, UserWarning) and "no negative" in str(w.message)]
    assert len(ours) == (1 if warns else 0), [str(w.message) for w in ours]
    if warns:
        assert "bce-an" in str(ours[0].message) and "mlcl list losses" in str(ours[0].message)
        assert ours[0].filename == __file__  # attributed to the caller of fit, not to mlcl's own code


def test_ll_cp_corrects_stored_targets_permanently(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = [
        "train.epochs=3",
        "train.batch_size=8",
        "data.image_size=32",
        "data.missing=single-positive",
        "loss.name=ll-cp",
        "loss.options={delta_rel: 0.05}",
    ]
    fit(_cfg(tmp_path / "run", str(csv), extra))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    from mlcl.data.csv_format import read_csv_labels
    from mlcl.data.missing import apply_missing
    from mlcl.data.split import holdout_split

    full = read_csv_labels(csv)
    tr, _ = holdout_split(len(full), 0.1, 0)
    initial = apply_missing(full.subset(tr).targets, "single-positive", 0)
    now = state["objective"]["base.label_table"]  # LL-Cp's label table, saved with the objective
    changed = now != initial
    assert changed.any(), "LL-Cp corrected nothing"
    # Only unknown entries are corrected, and they become positives.
    assert bool((initial[changed] == -1).all()) and bool((now[changed] == 1).all())


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_bn_keeps_running_statistics(tmp_path: Path, freeze: bool) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    extra = [
        "train.epochs=1",
        "train.batch_size=8",
        "data.image_size=32",
        "train.ema=false",
        f"train.freeze_bn={str(freeze).lower()}",
        "optim.lr=1e-2",
    ]
    fit(_cfg(tmp_path / "run", str(csv), extra))
    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    means = [k for k in state if k.startswith("backbone.") and k.endswith("running_mean")]
    assert means  # resnet10t has BatchNorm layers
    # fresh BatchNorm statistics are mean 0 / var 1: frozen layers keep them, training layers move them
    moved = [not torch.equal(state[k], torch.zeros_like(state[k])) for k in means]
    assert (not any(moved)) if freeze else all(moved)
    counts = [int(state[k.replace("running_mean", "num_batches_tracked")]) for k in means]
    assert all(c == 0 for c in counts) if freeze else all(c == 2 for c in counts)
    # the affine weights still train either way
    weights = [k.replace("running_mean", "weight") for k in means]
    assert any(not torch.equal(state[k], torch.ones_like(state[k])) for k in weights)


def test_checkpoint_keys_are_the_documented_ones_and_old_checkpoints_still_load(tmp_path: Path) -> None:
    """`last.pt` holds exactly `state.CHECKPOINT_KEYS`, the slim `best.pt` `state.BEST_KEYS`; a checkpoint of mlcl
    0.1.0 (full `best.pt`, no checksum) still predicts."""
    from mlcl.engine.checkpoint import FORMAT
    from mlcl.engine.state import BEST_KEYS, CHECKPOINT_KEYS
    from mlcl.errors import CheckpointError

    csv = make_shapes_csv(tmp_path / "data", n=24)
    fit(_cfg(tmp_path / "run", str(csv), ["train.epochs=1", "train.batch_size=8", "data.image_size=32"]))
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert set(best) == {"format", "path", *BEST_KEYS}
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert set(last) == {"format", "path", *CHECKPOINT_KEYS}
    # best.pt's `model` is the evaluation weights: last.pt's `model` or `ema`, whichever scored best (1 epoch).
    evaluated = last["ema"] if best["eval_weights"] == "ema" else last["model"]
    assert best["model"].keys() == evaluated.keys()
    for k, v in evaluated.items():
        assert torch.equal(best["model"][k], v), k
    # The layout written before the engine's redesign: a full best.pt, ROLE/LL-Cp state under `criterion`,
    # `train_targets`, saved without a checksum.
    old = {k: v for k, v in last.items() if k not in ("objective", "path")}
    old.update(eval_weights=best["eval_weights"], criterion=None, train_targets=torch.zeros(20, 4, dtype=torch.int8))
    (tmp_path / "old").mkdir()
    torch.save({**old, "format": FORMAT}, tmp_path / "old" / "best.pt")
    images = [str(p) for p in sorted((tmp_path / "data" / "images").glob("*.png"))[:3]]
    new_probs = Predictor.from_checkpoint(tmp_path / "run" / "best.pt").predict(images)
    torch.testing.assert_close(Predictor.from_checkpoint(tmp_path / "old" / "best.pt").predict(images), new_probs)
    # ... but resuming it says why not, in one line.
    (tmp_path / "old" / "last.pt").write_bytes((tmp_path / "old" / "best.pt").read_bytes())
    (tmp_path / "old" / "config.yaml").write_text((tmp_path / "run" / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="not be resumed|cannot be resumed|but not resumed"):
        fit(_cfg(tmp_path / "old", str(csv), ["train.epochs=2", "train.batch_size=8", "data.image_size=32"]),
            resume=tmp_path / "old")  # fmt: skip


def test_scoring_pass_gives_the_loss_the_trained_models_scores_on_every_training_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlcl.losses
    from mlcl.losses import BCELoss
    from mlcl.losses.base import PerImageState

    seen: list[tuple[int, torch.Tensor]] = []

    class Recorder(PerImageState, BCELoss):
        needs_train_scores = True

        def init_state(self, train_targets: torch.Tensor, *, seed: int) -> None:
            self.n_train = len(train_targets)

        def forward(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor | None = None):  # type: ignore[override]
            return super().forward(logits, targets)

        def observe_train_scores(self, scores: torch.Tensor) -> None:
            seen.append((self.n_train, scores.detach().clone().cpu()))

    monkeypatch.setitem(mlcl.losses.LOSSES, "recorder", Recorder)
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = ["train.epochs=3", "train.batch_size=8", "data.image_size=32", "train.ema=false", "loss.name=recorder"]
    # Stopped after epoch 2 of 3 (the run continues with --resume): epochs 1 and 2 are scored, and last.pt holds
    # the weights of the second pass (the run's last epoch is never scored: nothing trains after it).
    extra += ["train.freeze_bn=true", "data.augment=default", "train.stop_after=2"]
    result = fit(_cfg(tmp_path / "run", str(csv), extra))
    assert [n for n, _ in seen] == [36, 36] and all(s.shape == (36, 4) for _, s in seen)
    assert not torch.equal(seen[0][1], seen[1][1])  # the model moved between the two passes
    # Independent: the saved weights through the evaluation transform, image by image, in the split's order
    # (dataset index i = the i-th training id).
    pred = Predictor.from_checkpoint(result.run_dir / "last.pt")
    train_ids = json.loads((result.run_dir / "split.json").read_text())["train"]
    probs = pred.predict([str(tmp_path / "data" / "images" / name) for name in train_ids])
    torch.testing.assert_close(seen[-1][1], probs, rtol=1e-5, atol=1e-6)
    # BatchNorm stayed frozen through the passes (fresh statistics, never updated).
    state = load_checkpoint(result.run_dir / "last.pt")["model"]
    assert all(int(v) == 0 for k, v in state.items() if k.endswith("num_batches_tracked"))


def test_em_apl_resumes_exactly_across_epoch_boundaries(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    extra = [
        "train.epochs=3",
        "train.batch_size=12",
        "data.image_size=32",
        "data.augment=default",
        "data.missing=single-positive",
        "loss.name=em-apl",
        "loss.options={warmup_epoch: 1}",
        "train.seed=4",
    ]
    r = full_and_resumed(lambda out, x: _cfg(out, str(csv), x), tmp_path, extra)
    saved, a, b = r.cut, r.a, r.b
    # The first round ran after epoch 1 (1-based warmup_epoch = 1) and is in the epoch-boundary checkpoint.
    assert saved["epoch"] == 1 and saved["position"]["epoch_step"] == 0
    assert bool(saved["objective"]["base.pl_mask"].any())
    assert b["epoch"] == a["epoch"] == 3 and b["step"] == a["step"]
    assert_equal_states(a, b, "model", "objective")
    # Two rounds (after epochs 1 and 2; none after the last): int(0.9 U_c / 2) entries per class each.
    mask, targets = a["objective"]["base.pl_mask"], a["objective"]["base.train_targets"]
    unknown = (targets == -1).sum(0)
    assert torch.equal(mask.sum(0), 2 * torch.tensor([int(0.9 * int(u) / 2) for u in unknown]))
    assert not bool((mask & (targets != -1)).any())
    assert r.resumed.metrics == r.full.metrics


def test_the_epoch_record_counts_the_wait_for_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow loader (each image takes at least 50 ms, in the main process) shows in log.jsonl and warns."""
    import logging
    import time

    from mlcl.data.dataset import ImageDataset

    csv = make_shapes_csv(tmp_path / "data", n=40)
    real = ImageDataset.__getitem__

    def slow(self: ImageDataset, index: int):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return real(self, index)

    monkeypatch.setattr(ImageDataset, "__getitem__", slow)
    monkeypatch.setattr("mlcl.engine.run_log.LOADER_BOUND_MIN_S", 0.0)  # this epoch waits about 2 s in all
    cfg = _cfg(tmp_path / "run", str(csv), ["train.epochs=1", "train.batch_size=8", "data.image_size=32"])
    with caplog.at_level(logging.WARNING, logger="mlcl"):
        result = fit(cfg)
    (record,) = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps = record["step"]
    assert steps >= 3
    assert record["data_wait_s"] >= 0.99 * steps * 8 * 0.05, record  # time.sleep waits at least that long
    assert record["data_wait_share"] >= 0.3, record  # a 32 px resnet10t step on 8 images takes far less
    assert any(r.getMessage().startswith("waiting for the data loader took") for r in caplog.records)
