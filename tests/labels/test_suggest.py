"""The ranking of suggestions against a plain loop over the scores, its filters, the file, and the command's errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from mlcl.cli import main
from mlcl.errors import ConfigError, DataError
from mlcl.labels.suggest import SUGGESTION_COLUMNS, rank_entries, read_suggestions, select
from mlcl.report.scores import load_scores
from tests.labels.conftest import TRAIN, Suggested


def loop_ranking(probs: np.ndarray, targets: np.ndarray, check_observed: bool) -> list[tuple[int, int, int, int]]:
    """``(row, col, rank, suggested)`` of every candidate, by counting, for each, the candidates ranked before it."""
    cands = []
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            v = int(targets[i, j])
            if v == -1 or check_observed:
                suggested = 0 if v == 1 else 1
                conf = float(probs[i, j]) if suggested == 1 else 1.0 - float(probs[i, j])
                cands.append((i, j, conf, suggested))
    out = []
    for i, j, conf, suggested in cands:
        before = sum(1 for a, b, c, _ in cands if c > conf or (c == conf and (a, b) < (i, j)))
        out.append((i, j, before + 1, suggested))
    return sorted(out, key=lambda r: r[2])


@pytest.mark.parametrize("check_observed", [False, True])
def test_ranking_matches_a_loop_with_ties(check_observed: bool) -> None:
    rng = np.random.default_rng(3)
    probs = np.round(rng.random((30, 4)), 1)  # many ties
    targets = rng.choice([-1, 0, 1], size=(30, 4))
    r = rank_entries(probs, targets, check_observed=check_observed)
    got = list(zip(r.rows.tolist(), r.cols.tolist(), r.rank.tolist(), r.suggested.tolist(), strict=True))
    assert got == loop_ranking(probs, targets, check_observed)
    assert np.array_equal(r.probability, probs[r.rows, r.cols]) and np.array_equal(r.value, targets[r.rows, r.cols])


def test_filters_match_loops() -> None:
    rng = np.random.default_rng(5)
    probs = rng.random((40, 3))
    targets = rng.choice([-1, 0, 1], size=(40, 3))
    full = rank_entries(probs, targets, check_observed=True)
    rows = list(zip(full.rows.tolist(), full.cols.tolist(), full.confidence.tolist(), full.rank.tolist(), strict=True))
    kept = select(full, min_prob=0.6, per_class=4, top=9)
    expected, per = [], {0: 0, 1: 0, 2: 0}
    for _, j, conf, rank in rows:
        if conf >= 0.6 and per[j] < 4:
            per[j] += 1
            expected.append(rank)
    assert kept.rank.tolist() == expected[:9]
    assert select(full, top=5).rank.tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top": 0}, "--top"), ({"per_class": -1}, "--per-class"), ({"min_prob": 1.5}, "--min-prob")],
)
def test_bad_filters(kwargs: dict, message: str) -> None:
    r = rank_entries(np.zeros((2, 2)), -np.ones((2, 2)))
    with pytest.raises(ConfigError, match=message):
        select(r, **kwargs)


def test_the_written_file_is_the_loop_ranking(suggested: Suggested) -> None:
    """The command's CSV against the loop over its own saved out-of-sample scores, and over the label file."""
    s = load_scores(suggested.out.with_name("sugg.scores.npz"))
    with open(suggested.hidden, newline="") as f:
        labels = list(csv.reader(f))
    names, table = labels[0][1:], {row[0]: [int(v) for v in row[1:]] for row in labels[1:]}
    assert s.class_names == names and s.targets.tolist() == [table[i] for i in s.ids]
    with open(suggested.out, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == SUGGESTION_COLUMNS
    expected = loop_ranking(s.scores.astype(np.float64), s.targets, check_observed=True)
    assert len(rows) - 1 == len(expected) == s.scores.size  # --check-observed: every entry
    for row, (i, j, rank, sugg) in zip(rows[1:], expected, strict=True):
        assert row == [s.ids[i], names[j], str(table[s.ids[i]][j]), f"{s.scores[i, j]:.6f}", str(rank), str(sugg)]


def test_read_suggestions_names_each_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text(
        "filename,class,value,probability,rank,suggested\n"
        "a.png,red,-1,0.9,1,1\n"
        "b.png,red,2,0.9,2,1\n"
        "c.png,red,-1,1.5,3,1\n"
        "a.png,red,-1,0.8,4,1\n"
        "d.png,,0,0.1,x,3\n"
    )
    with pytest.raises(DataError) as e:
        read_suggestions(p)
    text = str(e.value)
    assert "4 problems" in text and "\n" not in text
    for part in (
        "line 3: bad value '2'",
        "line 4: bad probability '1.5'",
        "line 5: (a.png, red) is already on line 2",
        "line 6: bad class '', rank 'x', suggested '3'",
    ):
        assert part in text
    (tmp_path / "h.csv").write_text("filename,class,probability\n")
    with pytest.raises(DataError, match="lacks value, rank, suggested"):
        read_suggestions(tmp_path / "h.csv")


def _suggest(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(["labels", "suggest", *TRAIN, *args])
    return int(e.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--missing", "drop:0.5"], "--missing drop:0.5: the suggestions are for the label file's own unknown"),
        (["--test-data", "{hidden}"], "--test-data"),
        (["--folds", "1"], "--folds must be an integer >= 2"),
        (["--folds", "49"], "--folds 49: more folds than images (48)"),
        (["--top", "0"], "--top must be >= 1"),
        (["--min-prob", "2"], "--min-prob must be a probability"),
        (["--out", "{hidden}"], "would replace the label file itself"),
        (["--out", "{existing}"], "already exist; --overwrite replaces them"),
        (["--resume", "x"], "--resume is not an option"),
    ],
)
def test_suggest_refuses_bad_options_before_training(
    suggested: Suggested, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    before = suggested.hidden.read_bytes()
    args = [a.format(hidden=suggested.hidden, existing=existing) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "new.csv")]
    code, err = _suggest(["--data", str(suggested.hidden), *out, *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert existing.read_text() == "keep me\n" and suggested.hidden.read_bytes() == before
    assert not (tmp_path / "new.folds").exists() and not (tmp_path / "new.csv").exists()


def test_suggest_needs_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _suggest(["--out", str(tmp_path / "s.csv")], capsys)
    assert code == 2 and "--data LABELS.csv is required" in err
