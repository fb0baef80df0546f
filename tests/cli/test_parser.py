"""The parser of ``mlcl``: cheap to build (no torch), every command's options documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "numpy", "matplotlib", "torchvision", "sklearn", "PIL")

# Runs `mlcl ARGS` in a fresh interpreter and prints, whatever happens, which heavy modules it imported.
_PROBE = f"""
import json, sys
from mlcl.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stdout.write("\\nHEAVY=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]) + f" CODE={{code}}\\n")
"""


def _imports(argv: list[str]) -> tuple[list[str], int, str]:
    """The heavy modules ``mlcl ARGV`` imported, its exit status and its stderr."""
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    last = r.stdout.strip().splitlines()[-1]
    heavy, code = last.removeprefix("HEAVY=").rsplit(" CODE=", 1)
    return json.loads(heavy), int(code), r.stderr


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["eval", "--help"], 0),
        (["predict", "--help"], 0),
        (["config", "show", "--help"], 0),
        (["train", "--no-such-flag"], 2),
        (["train", "--head", "nosuchhead"], 2),
        (["eval"], 2),
        (["list", "nothing"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_help_and_usage_errors_import_nothing_heavy(argv: list[str], status: int) -> None:
    """``mlcl --help`` and a usage error answer without importing torch, timm, NumPy or matplotlib."""
    heavy, code, err = _imports(argv)
    assert code == status, err
    assert heavy == [], f"`mlcl {' '.join(argv)}` imported {heavy}"
    if status == 2:
        assert err.count("\n") == 1 and "error:" in err, err
