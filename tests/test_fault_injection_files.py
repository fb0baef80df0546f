"""Faults injected through the real command line: each ends in one line on stderr, and nothing earlier is lost.

Every test runs ``mlcl.cli.main`` in-process (so that the fault can be patched in) and checks the exit status,
that stderr holds exactly one line and no traceback, and that the files written before the fault are unchanged
(byte for byte) with no temporary file left behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlcl.cli import main
from tests.helpers.synthetic import make_shapes_csv

TINY = [
    "--backbone",
    "resnet10t",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "-o",
    "train.device=cpu",
    "-o",
    "run.tensorboard=false",
    "--no-progress",
    "-o",
    "data.num_workers=0",
]


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
    rc, _, err = cli(["train", "--resume", str(stopped_run), *TINY], capsys)
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
    rc, _, err = cli(["train", "--resume", str(stopped_run), *TINY], capsys)
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
        rc, _, err = cli(["train", "--resume", str(stopped_run), *TINY], capsys)
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
    assert 'bce-an     BCELoss with unknown="negative" by default' in out


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
    assert done.stderr.splitlines()[-1].startswith("2 epoch(s) in "), done.stderr
