"""A file that is not a checkpoint (empty, text, a Git LFS pointer, other bytes) is one line saying what it is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlcl.cli import main

KINDS = {
    "empty": (b"", "is empty (0 bytes)"),
    "html": (
        b"<html><body>404 Not Found</body></html>\n",
        "is a text file, not a PyTorch file (it starts with '<html>",
    ),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "is a Git LFS pointer"),
    "bytes": (bytes(range(1, 64)), "is not a PyTorch file (it starts with bytes 01 02 03"),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("command", ["eval", "predict", "calibrate", "export", "init-from"])
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture, kind: str, command: str
) -> None:
    content, says = KINDS[kind]
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(content)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    argv = {
        "eval": ["eval", str(ckpt), "--data", "builtin"],
        "predict": ["predict", str(ckpt), str(image)],
        "calibrate": ["calibrate", str(ckpt), "--data", "builtin"],
        "export": ["export", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
        "init-from": ["train", "--init-from", str(ckpt), "--out", str(tmp_path / "run"), "--device", "cpu"],
    }[command]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mlcl: error: ") and err.count("\n") == 1, err
    assert f"{ckpt} {says}" in err, err
    assert "EOFError" not in err and "KeyError" not in err and "UnpicklingError" not in err
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "x.png"]  # nothing written
