"""Fault injection through the real command line: each fault ends in one line, a documented status, no loss.

Every case runs ``mlcl ...`` in-process (``mlcl.cli.main``) and checks: the exit status, exactly one line on
stderr without a traceback, and that the files an earlier run wrote are unchanged. Signals and SIGKILL are
injected in ``tests/engine/test_preemption.py`` (they need a process of their own).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest

from mlcl.cli import main
from tests.helpers.synthetic import make_shapes_csv

TINY = ["--backbone", "resnet10t", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress"]
TINY += ["-o", "run.tensorboard=false", "-o", "train.device=cpu"]


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
    status, lines = _cli(capsys, ["train", "--method", "mulcon", "--epochs", "3", "--out", str(tmp_path / "r"), *TINY])
    assert status == 2 and len(lines) == 1 and "train.epochs" in lines[0] and "mulcon.stage1_epochs" in lines[0]
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
    assert status == 2 and len(lines) == 1, lines
    assert "non-finite" in lines[0] and "epoch" in lines[0] and "--lr" in lines[0]


def test_a_loss_that_grows_by_orders_of_magnitude_warns(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    csv, _ = trained
    over = ["train.device=cpu", "data.num_workers=0", "run.progress=false", "run.tensorboard=false"]
    over += ["model.backbone=resnet10t", "data.image_size=32", "train.batch_size=8", "train.epochs=2"]
    over += ["optim.lr=1000", "train.ema=false", f"data.train={csv}", f"run.out={tmp_path / 'run'}"]
    from mlcl.errors import DivergenceError

    with pytest.warns(UserWarning, match="grew"), contextlib.suppress(DivergenceError):  # it may also diverge
        fit(load_config(None, over))
