"""Fault injection: every fault a user met ends in one line, a documented exit status, and nothing lost.

Each case injects one fault, mostly through the real command line (``mlcl.cli.main`` in-process, or
``python -m mlcl`` in a subprocess where a signal or a kill needs a process of its own), and checks the exit
status, that stderr holds one line and no traceback, and that no earlier file was lost or changed. The faults:
SIGTERM and SIGINT at a step, SIGKILL between periodic checkpoints, a non-finite loss from a chosen step, a loss
that explodes, overlapping splits, a full disk, a read-only folder, truncated, foreign and bit-flipped
checkpoints, a truncated JPEG behind two DataLoader workers, and each bad flag. The README's reliability table
lists them with what each gives.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import mlcl.engine.loop as L
import mlcl.engine.loop as loop_module
from mlcl.cli import main
from mlcl.engine.checkpoint import load_checkpoint
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from mlcl.errors import TrainingInterrupted
from tests.helpers.ddp import run_spawned
from tests.helpers.resume import QUIET_ARGS
from tests.helpers.synthetic import make_shapes_csv

# --------------------------------------------------------------- Run folders, resume options, bad flags and divergence


# The flags of a tiny CPU run; TINY adds no DataLoader workers, FAST one epoch (with the default workers).
TINY_COMMON = [
    "--backbone",
    "resnet10t",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    *QUIET_ARGS,
    "-o",
    "train.device=cpu",
]
TINY = [*TINY_COMMON, "--workers", "0"]
FAST = [*TINY_COMMON, "--epochs", "1"]


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    """Run ``mlcl argv``; the exit status and the non-empty lines written to stderr."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = int(e.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, [line for line in err.splitlines() if line.strip()]


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One finished run: (its CSV, its folder)."""
    root = tmp_path_factory.mktemp("trained")
    csv = make_shapes_csv(root / "data", n=24)
    assert main(["train", "--data", str(csv), "--out", str(root / "run"), "--epochs", "1", *TINY]) == 0
    return csv, root / "run"


def test_second_run_into_the_same_folder_is_refused(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, run = trained
    before = _digests(run)
    status, lines = _cli(capsys, ["train", "--data", str(csv), "--out", str(run), "--epochs", "1", *TINY])
    assert status == 2 and len(lines) == 1 and "--resume" in lines[0] and "--overwrite" in lines[0]
    assert _digests(run) == before


def test_overwrite_replaces_the_run(
    tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, run = trained
    copy = tmp_path / "run"
    copy.mkdir()
    for name, _ in _digests(run).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((run / name).read_bytes())
    (copy / "notes.txt").write_text("mine")
    status, _ = _cli(
        capsys, ["train", "--data", str(csv), "--out", str(copy), "--epochs", "1", "--seed", "1", "--overwrite", *TINY]
    )
    assert status == 0
    assert (copy / "notes.txt").read_text() == "mine"  # only the run's own outputs are replaced
    import yaml

    assert yaml.safe_load((copy / "config.yaml").read_text())["train"]["seed"] == 1


def test_default_run_folders_do_not_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcl.engine.config import Config
    from mlcl.engine.trainer import _claim_run_dir

    monkeypatch.chdir(tmp_path)
    folders = {_claim_run_dir(Config())[0] for _ in range(20)}  # all within the same second
    assert len(folders) == 20 and all(p.is_dir() for p in folders)


def test_a_run_that_fails_before_any_checkpoint_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    out = tmp_path / "run"
    status, lines = _cli(
        capsys, ["train", "--data", str(csv), "--out", str(out), "--batch-size", "64", *TINY[:4], *TINY[6:]]
    )
    assert status == 2 and len(lines) == 1 and "batch_size" in lines[0]
    assert not out.exists()


def test_resume_refuses_options_that_change_the_run(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = trained
    before = _digests(run)
    status, lines = _cli(capsys, ["train", "--resume", str(run), "--epochs", "3", "--lr", "0.5"])
    assert status == 2 and len(lines) == 1 and "--epochs" in lines[0] and "--lr" in lines[0]
    assert _digests(run) == before


def test_resume_of_a_folder_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _cli(capsys, ["train", "--resume", str(tmp_path)])
    assert status == 2 and len(lines) == 1 and "no run there" in lines[0]


def test_options_a_method_would_ignore_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _cli(capsys, ["train", "--method", "mulcon", "--lr", "0.1", "--out", str(tmp_path / "r"), *TINY])
    assert status == 2 and len(lines) == 1 and "optim.lr" in lines[0] and "mulcon.stage1_lr" in lines[0]
    assert not (tmp_path / "r").exists()
    # --epochs sets the length of MulCon's stages; a different mulcon.stage1_epochs beside it is refused
    over = ["-o", "mulcon.stage1_epochs=2"]
    status, lines = _cli(
        capsys, ["train", "--method", "mulcon", "--epochs", "3", *over, "--out", str(tmp_path / "r"), *TINY]
    )
    assert status == 2 and len(lines) == 1 and "train.epochs`=3" in lines[0] and "mulcon.stage1_epochs`=2" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        (["--batch-size", "0"], "train.batch_size"),
        (["--views", "0"], "data.views"),
        (["--clml-tau", "5", "--loss", "bce+clml"], "loss.clml_tau"),
        (["--workers", "-1"], "data.num_workers"),
        (["--epochs", "0"], "train.epochs"),
        (["--image-size", "0"], "data.image_size"),
        (["--lr", "nan"], "optim.lr"),
        (["-o", "optim.lr=-1"], "optim.lr"),
        (["-o", "train.checkpoint_every=soon"], "train.checkpoint_every"),
    ],
)
def test_bad_flags_are_one_line_and_leave_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], key: str
) -> None:
    out = tmp_path / "run"
    status, lines = _cli(capsys, ["train", "--out", str(out), *flags])
    assert status == 2 and len(lines) == 1 and key in lines[0], lines
    assert not out.exists()


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_state(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, _ = trained
    out = tmp_path / "run"
    status, lines = _cli(
        capsys,
        [
            "train",
            "--data",
            str(csv),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--lr",
            "1e6",
            *TINY,
            "-o",
            "train.ema=false",
        ],
    )
    errors = [x for x in lines if x.startswith("mlcl: error:")]
    assert status == 2 and len(errors) == 1, lines
    assert "non-finite" in errors[0] and "epoch" in errors[0] and "--lr" in errors[0]
    # the explosion before it is announced as one warning line
    assert [x for x in lines if x not in errors] == [x for x in lines if x.startswith("mlcl: warning:")]


def test_a_loss_that_grows_by_orders_of_magnitude_warns(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    csv, _ = trained
    over = ["train.device=cpu", "data.num_workers=0", "run.progress=false", "run.tensorboard=false", "run.report=false"]
    over += ["model.backbone=resnet10t", "data.image_size=32", "train.batch_size=8", "train.epochs=2"]
    over += ["optim.lr=1000", "train.ema=false", f"data.train={csv}", f"run.out={tmp_path / 'run'}"]
    from mlcl.errors import DivergenceError

    with pytest.warns(UserWarning, match="grew"), contextlib.suppress(DivergenceError):  # it may also diverge
        fit(load_config(None, over))


# ----------------- Signals and kills: SIGTERM/SIGINT at a step, SIGKILL between periodic checkpoints, mid-epoch resume


REPO = Path(__file__).resolve().parents[1]

BASE = [
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "run.report=false",
    "model.backbone=resnet10t",
    "train.epochs=2",
    "train.batch_size=8",
    "data.image_size=32",
    "data.augment=default",
    "train.seed=5",
]
# LL-Cp with CLML on single-positive labels: from the second epoch LL-Cp records corrections during the epoch
# (state that a mid-epoch checkpoint must carry), and CLML corrects labels with the gathered logits.
LLCP = ["data.missing=single-positive", "loss.name=ll-cp+clml", "loss.options={delta_rel: 0.05}"]


def _cfg(csv: Path, out: Path, extra: list[str]) -> Any:
    return load_config(None, [*BASE, f"data.train={csv}", f"run.out={out}", *extra])


def _signal_at(monkeypatch: pytest.MonkeyPatch, step: int, signum: int) -> None:
    """Send ``signum`` to this process during the ``step``-th training step (1-based, counted in this run)."""
    calls = {"n": 0}
    original = loop_module.train_step

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", wrapped)


def _assert_same_run(a_dir: Path, b_dir: Path) -> None:
    a, b = load_checkpoint(a_dir / "last.pt"), load_checkpoint(b_dir / "last.pt")
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k in a["objective"] or {}:
        assert torch.equal(a["objective"][k], b["objective"][k]), k
    ma = json.loads((a_dir / "metrics.json").read_text())
    mb = json.loads((b_dir / "metrics.json").read_text())
    for key in ("mAP", "CF1", "OF1", "CP", "CR", "OP", "OR"):
        assert mb[key] == pytest.approx(ma[key], abs=1e-6), key
    # the logged per-epoch training losses too: the running sums survive the stop
    la = [json.loads(x)["train"] for x in (a_dir / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train"] for x in (b_dir / "log.jsonl").read_text().splitlines()]
    assert len(la) == len(lb)
    for ra, rb in zip(la, lb, strict=True):
        assert rb == pytest.approx(ra, rel=1e-9)


# A random step of the run (7 of the 8 steps; the 8th ends the run), drawn once per signal with a fixed seed so
# that a failure can be replayed: the step is in the test's id.
_STEPS = {sig: random.Random(f"mlcl-{sig.name}").randint(1, 7) for sig in (signal.SIGTERM, signal.SIGINT)}


@pytest.mark.parametrize(
    ("signum", "step", "status"),
    [(signal.SIGTERM, _STEPS[signal.SIGTERM], 75), (signal.SIGINT, _STEPS[signal.SIGINT], 130)],
    ids=[f"SIGTERM-step{_STEPS[signal.SIGTERM]}", f"SIGINT-step{_STEPS[signal.SIGINT]}"],
)
def test_signal_at_a_random_step_then_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, step: int, status: int
) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)  # 36 training images: 4 steps per epoch, 2 epochs
    fit(_cfg(csv, tmp_path / "full", LLCP))
    _signal_at(monkeypatch, step, signum)
    with pytest.raises(TrainingInterrupted) as info:
        fit(_cfg(csv, tmp_path / "part", LLCP))
    monkeypatch.undo()
    assert info.value.exit_status == status and info.value.signal_name == signal.Signals(signum).name
    assert f"--resume {tmp_path / 'part'}" in str(info.value)
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert saved["step"] == step and saved["position"]["epoch_step"] == step % 4  # 0: stopped at the epoch's end
    assert not (tmp_path / "part" / "metrics.json").exists()
    fit(_cfg(csv, tmp_path / "ignored", []), resume=tmp_path / "part")
    _assert_same_run(tmp_path / "full", tmp_path / "part")


# EM + APL labels at the end of epoch 1 from a pass over the training images: a SIGTERM at the epoch's last step
# (step 4) stops after that pass, in the epoch-boundary checkpoint; one mid-epoch (step 6) carries the labels.
EMAPL = ["data.missing=single-positive", "loss.name=em-apl", "loss.options={warmup_epoch: 1}"]


def test_em_apl_signal_at_the_epochs_last_step_or_mid_epoch_then_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)  # 36 training images: 4 steps per epoch, 2 epochs
    fit(_cfg(csv, tmp_path / "full", EMAPL))
    full_mask = load_checkpoint(tmp_path / "full" / "last.pt")["objective"]["base.pl_mask"]
    assert bool(full_mask.any())
    for step in (4, 6):
        part = tmp_path / f"part{step}"
        _signal_at(monkeypatch, step, signal.SIGTERM)
        with pytest.raises(TrainingInterrupted):
            fit(_cfg(csv, part, EMAPL))
        monkeypatch.undo()
        saved = load_checkpoint(part / "last.pt")
        assert (saved["epoch"], saved["position"]["epoch_step"]) == ((1, 0) if step == 4 else (1, 2))
        assert torch.equal(saved["objective"]["base.pl_mask"], full_mask)  # the one round (after epoch 1) is in
        fit(_cfg(csv, tmp_path / "ignored", []), resume=part)
        _assert_same_run(tmp_path / "full", part)


def test_nan_from_a_chosen_step_stops_before_the_update_and_keeps_last_pt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loss turns NaN at global step 6 (epoch 2, step 2): one line naming them; last.pt is epoch 1's."""
    import mlcl.engine.objective as objective_module

    csv = make_shapes_csv(tmp_path / "data", n=40)
    calls = {"n": 0}
    original = objective_module.Objective.forward

    def nan_from_step_6(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        terms = original(self, *args, **kwargs)
        if calls["n"] >= 6:
            terms["base"] = terms["base"] * float("nan")
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(objective_module.Objective, "forward", nan_from_step_6)
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--out", str(out), "--epochs", "3", *TINY]
    try:
        status = main(argv)
    except SystemExit as e:
        status = int(e.code or 0)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and "warning" not in x]
    assert status == 2 and len(err) == 1, err
    assert "non-finite loss" in err[0] and "epoch 2, step 2" in err[0] and "base=nan" in err[0], err[0]
    saved = load_checkpoint(out / "last.pt")
    assert saved["epoch"] == 1 and saved["step"] == 4  # the last good state, written at the end of epoch 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


_KILL_SCRIPT = """
import os, signal, sys
import mlcl.engine.loop as L
from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
calls = {"n": 0}
original = L.train_step
def wrapped(*a, **k):
    calls["n"] += 1
    if calls["n"] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*a, **k)
L.train_step = wrapped
fit(load_config(None, sys.argv[2:]))
"""


def test_sigkill_loses_at_most_the_steps_since_the_periodic_checkpoint(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    every = ["train.checkpoint_every=3"]
    fit(_cfg(csv, tmp_path / "full", [*LLCP, *every]))
    args = [*BASE, f"data.train={csv}", f"run.out={tmp_path / 'part'}", *LLCP, *every]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, "8", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    # killed during step 8: the last checkpoint is the periodic one after step 7 (the epoch's 3rd step)
    assert saved["step"] == 7 and saved["position"]["epoch_step"] == 3
    fit(_cfg(csv, tmp_path / "ignored", []), resume=tmp_path / "part")
    _assert_same_run(tmp_path / "full", tmp_path / "part")


def test_results_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    one = ["train.epochs=1", "train.max_steps_per_epoch=3"]
    fit(_cfg(csv, tmp_path / "w0", one))
    fit(_cfg(csv, tmp_path / "w2", [*one, "data.num_workers=2"]))
    a, b = load_checkpoint(tmp_path / "w0" / "last.pt"), load_checkpoint(tmp_path / "w2" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


_CLI_SCRIPT = """
import os, signal, sys
import mlcl.engine.loop as L
calls = {"n": 0}
original = L.train_step
def wrapped(*a, **k):
    calls["n"] += 1
    if calls["n"] == 2:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return original(*a, **k)
L.train_step = wrapped
from mlcl.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 75)])
def test_cli_stops_with_one_line_and_the_documented_status(tmp_path: Path, name: str, status: int) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--out", str(out), "--backbone", "resnet10t", "--image-size", "32"]
    argv += ["--batch-size", "8", "--epochs", "2", "--workers", "0", *QUIET_ARGS]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", _CLI_SCRIPT, name, *argv], env=env, capture_output=True, text=True)
    assert proc.returncode == status, proc.stderr
    # the run's own lines (its speed options, its cache) come first; then one line says why it stopped
    lines = [x for x in proc.stderr.splitlines() if x.startswith("mlcl:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == lines[0]
    assert name in lines[0] and f"mlcl train --resume {out}" in lines[0]
    assert load_checkpoint(out / "last.pt")["position"]["epoch_step"] == 2


DDP = [
    "model.backbone=test_convnext",
    "data.augment=none",
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "run.report=false",
    "train.epochs=2",
    "train.batch_size=8",
    "data.image_size=32",
    "optim.lr=1e-3",
    "loss.name=role",
    "data.missing=single-positive",
    "loss.options={expected_num_pos: 1.5}",
]


def _ddp_worker(rank: int, port: int, overrides: list[str], stop_at: int, resume: str | None) -> None:
    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from mlcl.engine.trainer import fit as fit_

    if stop_at and rank == 0:  # the signal reaches one rank; both stop at the same step
        calls = {"n": 0}
        original = L.train_step

        def wrapped(*a: Any, **k: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(*a, **k)

        L.train_step = wrapped  # type: ignore[assignment]
    try:
        fit_(load_config(None, overrides), resume=resume)
    except TrainingInterrupted:
        pass
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.ddp
def test_two_process_mid_epoch_resume_equals_uninterrupted(tmp_path: Path) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=40)
    full = [*DDP, f"data.train={csv}", f"run.out={tmp_path / 'full'}"]
    part = [*DDP, f"data.train={csv}", f"run.out={tmp_path / 'part'}"]
    run_spawned(_ddp_worker, full, 0, None)
    run_spawned(_ddp_worker, part, 3, None)
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert saved["step"] == 3 and len(saved["rng"]) == 2  # every rank's random streams
    run_spawned(_ddp_worker, [*DDP, f"data.train={csv}"], 0, str(tmp_path / "part"))
    _assert_same_run(tmp_path / "full", tmp_path / "part")


# -------------------------------------------------------------- Data: truncated images, overlapping splits, CSV values


def train(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(["train", *args, *FAST])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return int(code or 0), capsys.readouterr().err


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def truncate_to_jpeg(path: Path) -> None:
    """Replace a PNG image by a JPEG of itself cut in half (a valid header, a truncated body)."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def csv_with_truncated_jpeg(root: Path) -> tuple[Path, int]:
    csv = make_shapes_csv(root, n=24)
    lines = csv.read_text().splitlines()
    truncate_to_jpeg(root / "images" / "img_005.png")
    (root / "images" / "img_005.png").rename(root / "images" / "cut.jpg")
    lines[6] = lines[6].replace("img_005.png", "cut.jpg")  # line 7 of the file
    csv.write_text("\n".join(lines) + "\n")
    return csv, 7


def test_truncated_jpeg_caught_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, line = csv_with_truncated_jpeg(tmp_path / "data")
    code, err = train(["--data", str(csv), "--workers", "2", "--out", str(tmp_path / "run")], capsys)
    message = one_line_error(code, err)
    assert f"line {line}" in message and "cut.jpg" in message and str(csv) in message


def test_truncated_jpeg_behind_two_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, line = csv_with_truncated_jpeg(tmp_path / "data")
    args = ["--data", str(csv), "--workers", "2", "--out", str(tmp_path / "run"), "-o", "data.check_images=false"]
    code, err = train(args, capsys)
    message = one_line_error(code, err)
    assert f"{csv}:{line}" in message and "cut.jpg" in message and "truncated" in message
    assert "item " not in message


def test_overlapping_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    lines = csv.read_text().splitlines()
    train_csv, val_csv = tmp_path / "data" / "train.csv", tmp_path / "data" / "val.csv"
    train_csv.write_text("\n".join(lines[:17]) + "\n")
    val_csv.write_text("\n".join([lines[0], *lines[15:]]) + "\n")  # img_014, img_015 in both
    args = ["--data", str(train_csv), "--val-data", str(val_csv), "--out", str(tmp_path / "run")]
    message = one_line_error(*train(args, capsys))
    assert "share 2 images (img_014.png, img_015.png)" in message and "allow_overlap" in message
    code, err = train([*args[:-1], str(tmp_path / "run2"), "-o", "data.allow_overlap=true"], capsys)
    assert code == 0, err
    assert (tmp_path / "run2" / "metrics.json").is_file()


def test_csv_with_float_values_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = make_shapes_csv(tmp_path / "data", n=24)
    lines = csv.read_text().splitlines()
    floats = [lines[0]] + [",".join([r.split(",")[0], *(f"{v}.0" for v in r.split(",")[1:])]) for r in lines[1:]]
    floats[3] = floats[3].rsplit(",", 1)[0] + ",-1.0"
    csv.write_text("\n".join(floats) + "\n")
    code, err = train(["--data", str(csv), "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["n_images"] > 0


# ---------------- Files, checkpoints and console: full disk, read-only folders, corrupt and foreign checkpoints, pipes


# The run-control options a resumed run accepts (the rest comes from the run).
RESUME_FLAGS = ["-o", "train.device=cpu", *QUIET_ARGS, "-o", "data.num_workers=0"]


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``mlcl ARGV`` in-process: exit status, stdout, stderr."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = int(e.code) if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The single ``mlcl: error:`` line of ``err`` (asserting there is no other line and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("mlcl: error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_lost(folder: Path, before: dict[str, bytes]) -> None:
    after = snapshot(folder)
    for name, content in before.items():
        assert name in after, f"{name} was removed"
        assert after[name] == content, f"{name} was changed"
    leftovers = [n for n in after if n.endswith(".tmp")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_csv(tmp_path_factory.mktemp("faults") / "data", n=24)


@pytest.fixture(scope="module")
def stopped_run_template(data_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after epoch 1 of 2 (``last.pt``, ``best.pt``, ``config.yaml``, ``log.jsonl``...)."""
    run = tmp_path_factory.mktemp("template") / "run"
    old = os.umask(0o022)
    try:
        argv = ["train", "--data", str(data_csv), "--epochs", "2", "-o", "train.stop_after=1", "--out", str(run)]
        assert main([*argv, *TINY]) == 0
    finally:
        os.umask(old)
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    return run


@pytest.fixture
def stopped_run(stopped_run_template: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(stopped_run_template, run)
    return run


# ----------------------------------------------------------------------------------------------------------------
# 1. files


def test_outputs_honour_the_umask(stopped_run_template: Path) -> None:
    """Written under umask 022, every output is 0644 (mkstemp alone gives 0600)."""
    modes = {p.name: p.stat().st_mode & 0o777 for p in stopped_run_template.iterdir() if p.is_file()}
    for name in ("best.pt", "last.pt", "config.yaml"):
        assert modes[name] == 0o644, modes


def test_atomic_write_mode_follows_a_stricter_umask(tmp_path: Path) -> None:
    from mlcl._io import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def _failing_save(exc: BaseException):  # type: ignore[no-untyped-def]
    """A torch.save that writes part of a file on disk, then fails as a full disk does (buffers are unaffected)."""
    real_save = torch.save

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if not isinstance(f, (str, os.PathLike)):
            real_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]
            return
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise exc

    return save


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:603] . unexpected pos 1024 vs 512"
            " PytorchStreamWriter failed writing file data/3: file write failed"
        ),
    ],
    ids=["ENOSPC", "torch-enforce-fail"],
)
def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_files(
    stopped_run: Path, exc: BaseException, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(stopped_run)
    monkeypatch.setattr(torch, "save", _failing_save(exc))
    rc, _, err = cli(["train", "--resume", str(stopped_run), *RESUME_FLAGS], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "no space left on the device" in line, line
    assert f"cannot write {stopped_run}" in line and ".tmp" not in line, line
    assert "is unchanged" in line, line
    assert_nothing_lost(stopped_run, before)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT])
def test_read_only_or_forbidden_folder_is_one_line_naming_the_target(
    stopped_run: Path, code: int, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final rename fails (as on a read-only file system, or without permission): simulated, root-proof."""
    before = snapshot(stopped_run)
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).startswith(str(stopped_run)):
            raise OSError(code, os.strerror(code), str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    rc, _, err = cli(["train", "--resume", str(stopped_run), *RESUME_FLAGS], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert f"cannot write {stopped_run}" in line and ".tmp" not in line, line
    reason = "disk quota exceeded" if code == errno.EDQUOT else os.strerror(code)
    assert reason in line, line
    assert_nothing_lost(stopped_run, before)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_real_read_only_folder(stopped_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = snapshot(stopped_run)
    stopped_run.chmod(0o555)
    try:
        rc, _, err = cli(["train", "--resume", str(stopped_run), *RESUME_FLAGS], capsys)
    finally:
        stopped_run.chmod(0o755)
    assert rc == 2
    line = one_error_line(err)
    assert f"cannot write {stopped_run}" in line and "Permission denied" in line, line
    assert_nothing_lost(stopped_run, before)


def test_predict_out_into_a_full_disk_keeps_the_previous_csv(
    stopped_run: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pred.csv"
    out.write_text("previous predictions\n")
    import builtins

    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "w" in mode and Path(str(file)).name.startswith(".pred.csv."):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    images = str(data_csv.parent / "images")
    rc, _, err = cli(["predict", str(stopped_run / "best.pt"), images, "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert line == f"mlcl: error: cannot write {out}: no space left on the device (the previous {out} is unchanged)"
    assert out.read_text() == "previous predictions\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------------------
# 2. checkpoints


def _eval_argv(checkpoint: Path, data_csv: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "eval.json"
    return ["eval", str(checkpoint), "--data", str(data_csv), "--device", "cpu", "--workers", "0", "--out", str(out)]


def test_flipped_bytes_are_a_checksum_mismatch(
    stopped_run: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    best = stopped_run / "best.pt"
    raw = bytearray(best.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.choice(len(raw), size=1000, replace=False):
        raw[i] ^= 0xFF
    best.write_bytes(bytes(raw))
    rc, out, err = cli(_eval_argv(best, data_csv, tmp_path), capsys)
    assert rc == 2
    line = one_error_line(err)
    assert line.startswith(f"mlcl: error: checkpoint {best} is corrupt (checksum mismatch): "), line
    assert not (tmp_path / "eval.json").exists()


def test_truncated_checkpoint_is_one_line(
    stopped_run: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    best = stopped_run / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    rc, _, err = cli(_eval_argv(best, data_csv, tmp_path), capsys)
    assert rc == 2
    assert f"checkpoint {best} is corrupt or truncated" in one_error_line(err)


def test_foreign_state_dict_is_not_an_mlcl_checkpoint(
    data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    foreign = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), foreign)
    rc, _, err = cli(_eval_argv(foreign, data_csv, tmp_path), capsys)
    assert rc == 2
    assert f"{foreign} is not an mlcl checkpoint" in one_error_line(err)


def test_checkpoint_checksum_is_verified_and_old_checkpoints_load(stopped_run: Path, tmp_path: Path) -> None:
    """The stored digest is the SHA-256 of the payload (hashlib, independently); a pre-checksum file loads."""
    import hashlib

    from mlcl.engine.checkpoint import FORMAT, load_checkpoint

    wrapped = torch.load(stopped_run / "best.pt", weights_only=True)
    assert set(wrapped) == {"format", "sha256", "payload"} and wrapped["format"] == FORMAT
    assert wrapped["sha256"] == hashlib.sha256(wrapped["payload"].numpy().tobytes()).hexdigest()
    inner = load_checkpoint(stopped_run / "best.pt")
    torch.save({k: v for k, v in inner.items() if k != "path"}, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old["class_names"] == inner["class_names"]
    for k, v in inner["model"].items():
        assert torch.equal(old["model"][k], v)


def _csv_without_last_class(data_csv: Path, out: Path) -> Path:
    rows = [line.split(",") for line in data_csv.read_text().splitlines()]
    out.write_text("\n".join(",".join(r[:-1]) for r in rows) + "\n")
    return out


def test_init_from_with_another_class_count_is_one_line_naming_both(
    stopped_run: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fewer = _csv_without_last_class(data_csv, data_csv.parent / "fewer.csv")
    n = len(data_csv.read_text().splitlines()[0].split(",")) - 1
    argv = ["train", "--data", str(fewer), "--epochs", "1", "--init-from", str(stopped_run / "best.pt")]
    rc, _, err = cli([*argv, "--out", str(tmp_path / "run2"), *TINY], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert f"the checkpoint has {n} classes, the data has {n - 1}" in line, line


# ----------------------------------------------------------------------------------------------------------------
# 3. --weights that do not fit the backbone


def test_weights_of_an_mlcl_checkpoint_are_refused(
    stopped_run: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", "--data", str(data_csv), "--epochs", "1", "--weights", str(stopped_run / "best.pt")]
    rc, _, err = cli([*argv, "--out", str(tmp_path / "run2"), *TINY], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert f"--weights {stopped_run / 'best.pt'}" in line and "--init-from" in line, line
    assert not list((tmp_path / "run2").glob("*.pt"))


def test_weights_of_another_architecture_are_refused(
    data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import timm

    other = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), other)
    target = [k for k in timm.create_model("resnet10t", num_classes=0).state_dict() if "num_batches" not in k]
    argv = ["train", "--data", str(data_csv), "--epochs", "1", "--weights", str(other)]
    rc, _, err = cli([*argv, "--out", str(tmp_path / "run2"), *TINY], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert f"--weights {other}: " in line and f"of {len(target)} resnet10t backbone tensors match" in line, line


def test_matching_weights_are_loaded_exactly_and_a_small_gap_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import timm

    from mlcl.models.backbone import TimmBackbone

    source = timm.create_model("resnet10t", num_classes=1000)  # with its classifier, as published weights are
    torch.nn.init.normal_(source.conv1[0].weight)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = TimmBackbone("resnet10t", weights=str(tmp_path / "w.pth")).model.state_dict()
    for k, v in loaded.items():
        assert torch.equal(v, source.state_dict()[k]), k
    assert not caplog.records
    partial = {k: v for k, v in source.state_dict().items() if k != "conv1.0.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with caplog.at_level("WARNING", logger="mlcl"):
        TimmBackbone("resnet10t", weights=str(tmp_path / "partial.pth"))
    assert "1 keep their random initialisation: conv1.0.weight" in caplog.text


# ----------------------------------------------------------------------------------------------------------------
# 4. --pretrained without network


def _offline_errors() -> list[BaseException]:
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return [
        LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot find the requested files"
            " in the local cache.\nPlease check your connection and try again."
        ),
        OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled."),
        httpx2.ConnectError("[Errno -3] Temporary failure in name resolution"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        FileNotFoundError(),  # no message, no filename: once printed as "None: None"
    ]


@pytest.mark.parametrize("exc", _offline_errors(), ids=lambda e: type(e).__name__)
def test_pretrained_without_network_is_one_line(
    exc: BaseException, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm.models._builder as builder

    def offline(*args: object, **kwargs: object) -> None:
        raise exc

    for fn in ("load_state_dict_from_hf", "load_state_dict_from_url", "download_cached_file", "load_custom_from_hf"):
        monkeypatch.setattr(builder, fn, offline)
    argv = ["train", "--data", str(data_csv), "--epochs", "1", "--pretrained", "--out", str(tmp_path / "run")]
    rc, _, err = cli([*argv, *TINY], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert line.startswith("mlcl: error: cannot download pretrained weights for resnet10t: no network? use --weights")
    assert "None: None" not in line


def test_hub_retry_window_is_shortened_only_during_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.file_download as fd
    import timm.models._builder as builder

    from mlcl.models.backbone import HUB_RETRY_SECONDS, TimmBackbone

    seen = []

    def offline(*args: object, **kwargs: object) -> None:
        seen.append(fd._ETAG_RETRY_TIMEOUT)
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    before = fd._ETAG_RETRY_TIMEOUT
    with pytest.raises(Exception, match="cannot download pretrained weights"):
        TimmBackbone("resnet10t", pretrained=True)
    restored = fd._ETAG_RETRY_TIMEOUT
    assert seen == [min(before, HUB_RETRY_SECONDS)]
    assert restored == before


# ----------------------------------------------------------------------------------------------------------------
# 5. console


def _run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m mlcl ARGV`` with stdout a pipe whose reader is already gone (``mlcl ... | head``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    try:
        return subprocess.run(
            [sys.executable, "-m", "mlcl", *argv], stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=300
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("what", ["backbones", "losses"])
def test_closed_pipe_ends_quietly_with_141(what: str) -> None:
    done = _run_into_closed_pipe(["list", what])
    assert done.returncode == 141, done.stderr.decode()
    assert done.stderr == b""


def test_closed_pipe_during_simulate_missing_ends_quietly(data_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing.csv"
    done = _run_into_closed_pipe(
        ["data", "simulate-missing", str(data_csv), "--protocol", "drop:0.5", "--out", str(out)]
    )
    assert done.returncode == 141, done.stderr.decode()
    assert done.stderr == b""
    assert out.is_file()  # written before the summary was printed


def test_closed_pipe_in_process_returns_141(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["list", "heads"]) == 141


@pytest.mark.parametrize("argv", [["list", "-v", "heads"], ["-v", "list", "heads"], ["list", "heads", "--verbose"]])
def test_verbose_is_accepted_after_the_subcommand(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    rc, out, err = cli(argv, capsys)
    assert rc == 0 and err == "" and out.startswith("linear ")


def test_verbose_after_the_subcommand_sets_verbose() -> None:
    from mlcl.cli import _build_parser

    parser = _build_parser()
    assert parser.parse_args(["train", "-v"]).verbose is True
    assert parser.parse_args(["-v", "train"]).verbose is True
    assert parser.parse_args(["train"]).verbose is False
    assert parser.parse_args(["data", "simulate-missing", "x", "--protocol", "p", "--out", "o", "-v"]).verbose is True


def test_list_losses_is_plain_text(capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = cli(["list", "losses"], capsys)
    assert rc == 0
    assert "`" not in out and ":func:" not in out and ":class:" not in out
    bce_an = next(line for line in out.splitlines() if line.startswith("bce-an "))
    assert "assumes every unknown label is negative" in bce_an


def _with_an_empty_class(data_csv: Path, out: Path) -> Path:
    rows = [line.split(",") for line in data_csv.read_text().splitlines()]
    out.write_text("\n".join(",".join(r if i == 0 else [*r[:-1], "0"]) for i, r in enumerate(rows)) + "\n")
    return out


def test_warnings_are_one_readable_line(
    stopped_run: Path, data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A UserWarning of the library (a class without positives) is one `mlcl: warning:` line, no source line."""
    data = _with_an_empty_class(data_csv, data_csv.parent / "empty_class.csv")
    argv = ["eval", str(stopped_run / "best.pt"), "--data", str(data), "--device", "cpu", "--workers", "0"]
    rc, _, err = cli([*argv, "--out", str(tmp_path / "m.json")], capsys)
    assert rc == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mlcl: warning: 1 of ") and "have no observed positive" in lines[0], err
    assert "warnings.warn" not in err and "UserWarning" not in err


def test_eval_names_its_output_after_the_data_and_keeps_other_datasets(
    stopped_run: Path, data_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    other = data_csv.parent / "other.csv"
    other.write_text(data_csv.read_text())
    base = ["--device", "cpu", "--workers", "0"]
    for data in (data_csv, other):
        rc, out, err = cli(["eval", str(stopped_run / "best.pt"), "--data", str(data), *base], capsys)
        assert rc == 0, err
    first = stopped_run / f"eval_{data_csv.stem}.json"
    second = stopped_run / "eval_other.json"
    assert json.loads(first.read_text())["data"] != json.loads(second.read_text())["data"]
    # the same data again updates its own file; a file of other data under that name is kept, in one line
    rc, _, err = cli(["eval", str(stopped_run / "best.pt"), "--data", str(other), *base], capsys)
    assert rc == 0, err
    second.write_text(first.read_text())  # now eval_other.json holds the first dataset's metrics
    before = snapshot(stopped_run)
    rc, _, err = cli(["eval", str(stopped_run / "best.pt"), "--data", str(other), *base], capsys)
    assert rc == 2
    assert "give --out FILE" in one_error_line(err)
    assert_nothing_lost(stopped_run, before)


# ----------------------------------------------------------------------------------------------------------------
# 6. per-epoch console output


def test_run_log_without_a_terminal_writes_plain_lines_and_one_line_per_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from mlcl.engine.run_log import RunLog

    run_log = RunLog(tmp_path, enabled=True, tensorboard=False, progress=True)
    with caplog.at_level("INFO", logger="mlcl"):
        for epoch in (1, 2):
            run_log.start_epoch(8, f"epoch {epoch}/2")
            for step in range(8):
                run_log.step(step, {"loss": 0.5 - 0.01 * step})
            val = {"model": {"mAP": 0.5, "CF1": 0.4, "OF1": 0.45}, "ema": {"mAP": 0.931, "CF1": 0.8, "OF1": 0.85}}
            run_log.end_epoch({"epoch": epoch, "train": {"loss": 0.1234}, "val": val, "time_s": 41.23})
        run_log.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = err.splitlines()
    pattern = re.compile(r"epoch ([12])/2: ([2468])/8 steps \((\d+)%\)  loss \d\.\d{4}  \d+\.\d s")
    matches = [pattern.fullmatch(line) for line in progress]
    assert all(matches), progress
    assert [(m.group(1), m.group(2), m.group(3)) for m in matches if m] == [
        (e, k, str(25 * int(k) // 2)) for e in "12" for k in "2468"
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] == [
        f"epoch {e}/2  loss 0.1234  val mAP 93.1 (ema)  CF1 80.0  OF1 85.0  41.2 s" for e in (1, 2)
    ], messages
    assert len(messages) == 3 and messages[2].startswith("2 epoch(s) in "), messages


def test_train_prints_one_plain_line_per_epoch_and_the_total_time(data_csv: Path, tmp_path: Path) -> None:
    """Through the real CLI with stderr a pipe (not a terminal), progress bar on, no -v."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    tiny = [a for a in TINY if a != "--no-progress"]
    argv = ["train", "--data", str(data_csv), "--epochs", "2", "--out", str(tmp_path / "run"), *tiny]
    done = subprocess.run(
        [sys.executable, "-m", "mlcl", *argv], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    epoch_lines = [line for line in done.stderr.splitlines() if line.startswith("epoch ") and " steps (" not in line]
    assert [line.split("  ")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"], done.stderr
    assert all(" loss " in line and " val mAP " in line and line.endswith(" s") for line in epoch_lines)
    assert sum(line.startswith("2 epoch(s) in ") for line in done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize("value", ["1.5", "nan", "-0.1"])
def test_predict_threshold_outside_0_1_is_one_line(
    trained: tuple[Path, Path], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, run = trained
    image = next((csv.parent / "images").glob("*.png"))
    status, lines = _cli(capsys, ["predict", str(run / "best.pt"), str(image), "--threshold", value])
    assert status == 2 and len(lines) == 1 and "--threshold" in lines[0], lines
