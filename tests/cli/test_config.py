"""``mlcl config show --describe`` and ``mlcl config validate`` reporting every problem of a file."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from mlcl.cli import main
from mlcl.engine.config import Config, config_to_dict, load_config


def _docstring_entry(cls: type, name: str) -> str:
    """The first line of field ``name``'s entry in ``cls``'s ``Attributes:`` docstring section (a plain search)."""
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        if line.startswith(f"    {name}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"{cls.__name__}.{name} is not documented")


def _comments(text: str) -> dict[str, str]:
    """``section.key`` -> the ``#`` comment lines just above the key, joined."""
    out, section, pending = {}, "", []
    for line in text.splitlines():
        if line.startswith("  # "):
            pending.append(line[4:])
        elif m := re.match(r"^(\w+):$", line):
            section, pending = m.group(1), []
        elif m := re.match(r"^  (\w+):", line):
            out[f"{section}.{m.group(1)}"], pending = " ".join(pending), []
    return out


def test_config_show_describe_explains_every_field_and_still_loads(capsys: pytest.CaptureFixture) -> None:
    overrides = ["train.epochs=7", "optim.betas=[0.8,0.9]", "loss.options.gamma=3"]
    assert main(["config", "show", "--describe", *(a for o in overrides for a in ("-o", o))]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == config_to_dict(load_config(None, overrides))  # the comments change nothing
    comments = _comments(out)
    for section in dataclasses.fields(Config):
        cls = section.default_factory  # type: ignore[misc]
        for f in dataclasses.fields(cls):
            text = comments[f"{section.name}.{f.name}"]
            words = re.findall(r"[A-Za-z]+", _docstring_entry(cls, f.name))[:3]
            assert re.findall(r"[A-Za-z]+", text)[:3] == words, (section.name, f.name, text, words)


def test_config_validate_reports_every_problem_of_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Problems in independent keys and components: each on its own line, each naming the file and the key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "train:\n  nope: 1\n  batch_size: 0\n"
        "loss:\n  name: focal\n  options:\n    gamma: -1\n"
        "optim:\n  schedule: onecycle\n  pct_start: 1.5\n"
        "model:\n  head: mulcon\n  head_heads: 0\n"
    )
    with pytest.raises(SystemExit) as e:
        main(["config", "validate", "--no-build", str(bad)])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    keys = ["train.nope", "`train.batch_size`", "`loss.options.gamma`", "`optim.pct_start`", "`model.head_heads`"]
    assert len(lines) == len(keys), lines
    for key in keys:
        assert sum(key in line for line in lines) == 1, (key, lines)
    assert all(line.startswith(f"mlcl: error: {bad}: ") for line in lines), lines


def test_config_validate_reports_a_mulcon_problem_of_one_stage_with_its_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Stage 1 (cosine) reads optim.min_lr_ratio, stage 2 (step) does not; the bad loss option fails in both."""
    bad = tmp_path / "mc.yaml"
    bad.write_text(
        "train:\n  method: mulcon\noptim:\n  min_lr_ratio: 2\nloss:\n  name: focal\n  options:\n    gamma: -1\n"
    )
    with pytest.raises(SystemExit):
        main(["config", "validate", "--no-build", str(bad)])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert sum("stage 1 of `train.method=mulcon`: `optim.min_lr_ratio`" in line for line in lines) == 1, lines
    assert sum("`loss.options.gamma`" in line and "stage" not in line for line in lines) == 1, lines
