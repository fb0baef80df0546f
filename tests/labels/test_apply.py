"""``mlcl labels apply``: a new label CSV with the accepted entries set and every other value kept; bad input."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from mlcl.cli import main
from mlcl.data.csv_format import read_csv_labels
from mlcl.errors import ConfigError, DataError
from mlcl.labels.apply import apply_suggestions, parse_accept
from tests.labels.conftest import Suggested


def _table(path: Path) -> dict[str, dict[str, int]]:
    """A label CSV as {absolute image path: {class: value}}, read with the csv module (empty cell = -1)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    return {
        os.path.abspath(root / r[0]): {c: int(v) if v.strip() else -1 for c, v in zip(rows[0][1:], r[1:], strict=True)}
        for r in rows[1:]
    }


def _suggestions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("rule", ["all", "top:7", "min-prob:0.6"])
def test_apply_sets_exactly_the_accepted_entries(suggested: Suggested, tmp_path: Path, rule: str) -> None:
    out = tmp_path / "completed.csv"  # another folder than the labels: image names are rewritten
    result = apply_suggestions(suggested.out, accept=rule, out=out)
    rows = _suggestions(suggested.out)
    if rule.startswith("top:"):
        accepted = sorted(rows, key=lambda r: int(r["rank"]))[: int(rule[4:])]
    elif rule.startswith("min-prob:"):
        p = float(rule[9:])
        accepted = [
            r for r in rows if (float(r["probability"]) if r["suggested"] == "1" else 1 - float(r["probability"])) >= p
        ]
    else:
        accepted = rows
    before, after = _table(suggested.hidden), _table(out)
    root = suggested.hidden.parent / "images"
    expected = {f: dict(v) for f, v in before.items()}
    for r in accepted:
        expected[os.path.abspath(root / r["filename"])][r["class"]] = int(r["suggested"])
    assert after == expected  # accepted entries set, every other value kept
    assert result.accepted == len(accepted) and result.renamed
    assert read_csv_labels(out).targets.shape == (48, 4)  # an ordinary label file (images found)


def test_rows_file_with_the_annotators_values(suggested: Suggested, tmp_path: Path) -> None:
    rows = _suggestions(suggested.out)[:3]
    chosen = tmp_path / "rows.csv"
    chosen.write_text(
        "filename,class,suggested\n"
        + "".join(f"{r['filename']},{r['class']},{v}\n" for r, v in zip(rows, (1, 0, -1), strict=True))
    )
    out = suggested.hidden.parent / "completed.csv"  # beside the labels: names kept as written
    try:
        result = apply_suggestions(suggested.out, accept=f"rows:{chosen}", out=out)
        after = _table(out)
        root = suggested.hidden.parent / "images"
        for r, v in zip(rows, (1, 0, -1), strict=True):
            assert after[os.path.abspath(root / r["filename"])][r["class"]] == v
        assert not result.renamed
        with open(out, newline="") as f, open(suggested.hidden, newline="") as g:
            assert [r[0] for r in csv.reader(f)] == [r[0] for r in csv.reader(g)]
    finally:
        out.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "expected all, top:N"),
        ("top:0", "N must be an integer >= 1"),
        ("min-prob:1.2", "P must be"),
        ("rows:/nonexistent.csv", "not found"),
        ("all:3", "expected all"),
    ],
)
def test_bad_accept_rules(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_accept(spec)


def _apply(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(["labels", "apply", *args])
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def _edited(suggested: Suggested, tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the suggestions file (and its metadata) with one row's text replaced."""
    text = suggested.out.read_text()
    assert old in text
    path = tmp_path / "edited.csv"
    path.write_text(text.replace(old, new, 1))
    (tmp_path / "edited.json").write_text(suggested.out.with_suffix(".json").read_text())
    return path


def test_suggestions_that_do_not_match_the_data(
    suggested: Suggested, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _suggestions(suggested.out)[0]
    head = f"{first['filename']},{first['class']},{first['value']},"
    cases = [
        (head, f"nope.png,{first['class']},{first['value']},", "line 2: image 'nope.png' is not in"),
        (head, f"{first['filename']},zebra,{first['value']},", "line 2: class 'zebra' is not a class of"),
        (
            head,
            f"{first['filename']},{first['class']},{1 - abs(int(first['value']))},",
            "they were made from other labels",
        ),
    ]
    out = tmp_path / "completed.csv"
    for old, new, message in cases:
        code, err = _apply([str(_edited(suggested, tmp_path, old, new)), "--accept", "all", "--out", str(out)], capsys)
        assert code == 2 and message in err and err.count("\n") == 1 and "edited.csv" in err, err
        assert not out.exists() and not list(tmp_path.glob(".completed*"))  # nothing written, no temporary file


def test_apply_never_writes_the_input_nor_an_existing_file(
    suggested: Suggested, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = suggested.hidden.read_bytes()
    code, err = _apply([str(suggested.out), "--accept", "all", "--out", str(suggested.hidden), "--overwrite"], capsys)
    assert code == 2 and "that is the label file" in err and suggested.hidden.read_bytes() == before
    existing = tmp_path / "old.csv"
    existing.write_text("keep\n")
    code, err = _apply([str(suggested.out), "--accept", "all", "--out", str(existing)], capsys)
    assert code == 2 and "already exists; --overwrite replaces it" in err and existing.read_text() == "keep\n"
    assert _apply([str(suggested.out), "--accept", "top:2", "--out", str(existing), "--overwrite"], capsys)[0] == 0
    assert existing.read_text().startswith("filename,")


def test_apply_without_metadata_needs_data(
    suggested: Suggested, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lone = tmp_path / "lone.csv"
    lone.write_text(suggested.out.read_text())
    code, err = _apply([str(lone), "--accept", "all", "--out", str(tmp_path / "c.csv")], capsys)
    assert code == 2 and "give --data LABELS.csv" in err
    code, _ = _apply(
        [str(lone), "--accept", "all", "--out", str(tmp_path / "c.csv"), "--data", str(suggested.hidden)], capsys
    )
    assert code == 0 and (tmp_path / "c.csv").is_file()


def test_a_rows_file_must_name_suggestions(suggested: Suggested, tmp_path: Path) -> None:
    first = _suggestions(suggested.out)[0]
    rows = tmp_path / "rows.csv"
    rows.write_text(f"filename,class,suggested\nnope.png,red,1\n{first['filename']},{first['class']},2\n")
    out = tmp_path / "c.csv"
    with pytest.raises(DataError) as e:
        apply_suggestions(suggested.out, accept=f"rows:{rows}", out=out)
    assert "line 2: (nope.png, red) is not among the suggestions" in str(e.value)
    assert "line 3: suggested '2' is not 1, 0 or -1" in str(e.value) and not out.exists()
