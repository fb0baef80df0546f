"""Ranked label suggestions: which entries of a label table most likely need another value, and their file.

An entry ``(i, j)`` of the targets ``Y (N, C)`` in {1, 0, -1} with out-of-sample probability ``p_ij`` of being
positive is a *candidate* when it is unknown (``Y_ij = -1``) or, with ``check_observed``, observed. Its suggested
value and the confidence of that suggestion are

* ``Y_ij`` in {-1, 0} (unknown, or observed negative: a possibly missed positive): suggested 1, confidence ``p_ij``;
* ``Y_ij = 1`` (observed positive: possibly wrong): suggested 0, confidence ``1 - p_ij``.

Candidates are ranked by decreasing confidence; ties by image row, then class column. Without ``check_observed``
the confidence is ``p_ij`` itself: the most likely missing positives come first. Ranks are 1-based positions in
the ranking of *all* candidates, before any filter, so that two filtered files of one ranking agree on ranks.

The suggestions file (``SUGGESTION_COLUMNS``) holds one row per kept candidate, in rank order::

    filename,class,value,probability,rank,suggested
    img_017.jpg,sea,-1,0.973412,1,1

``value`` is the entry's current value in the label file, ``probability`` ``p_ij`` (6 decimals), ``suggested`` the
value the suggestion proposes. Beside it, ``<stem>.scores.npz`` keeps every entry's probability
(:func:`mlcl.report.scores.save_scores`) and ``<stem>.json`` what the suggestions were computed from.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._csv_table import Problems
from mlcl._io import atomic_write_text
from mlcl.errors import ConfigError, DataError

__all__ = [
    "META_FORMAT",
    "SUGGESTION_COLUMNS",
    "Ranking",
    "SuggestionFiles",
    "SuggestionRow",
    "check_outputs",
    "rank_entries",
    "read_meta",
    "read_suggestions",
    "select",
    "suggestion_files",
    "suggestions_text",
    "write_meta",
    "write_suggestion_files",
]

#: The columns of a suggestions file, in order.
SUGGESTION_COLUMNS = ("filename", "class", "value", "probability", "rank", "suggested")
#: The ``format`` value of the metadata file beside a suggestions file.
META_FORMAT = "mlcl-label-suggestions"


@dataclass(frozen=True)
class Ranking:
    """Ranked candidate entries (``M`` of them), best first.

    Attributes:
        rows: ``(M,)`` int64 image rows ``i``.
        cols: ``(M,)`` int64 class columns ``j``.
        value: ``(M,)`` int8 current values ``Y_ij``.
        probability: ``(M,)`` float64 ``p_ij``.
        suggested: ``(M,)`` int8 suggested values (1, or 0 for observed positives).
        confidence: ``(M,)`` float64 probability that the suggested value is right (``p`` or ``1 - p``).
        rank: ``(M,)`` int64 1-based ranks among all candidates.
    """

    rows: np.ndarray
    cols: np.ndarray
    value: np.ndarray
    probability: np.ndarray
    suggested: np.ndarray
    confidence: np.ndarray
    rank: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def take(self, keep: np.ndarray) -> Ranking:
        """The entries selected by ``keep`` (a boolean mask or indices), in their order."""
        return Ranking(*(np.asarray(a)[keep] for a in self._arrays()))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.rows, self.cols, self.value, self.probability, self.suggested, self.confidence, self.rank)


def _check_inputs(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs, dtype=np.float64)
    y = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets)
    if p.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"rank_entries: probabilities {p.shape} and targets {y.shape} must be the same (N, C)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("rank_entries: probabilities must be finite and in [0, 1]")
    if not np.isin(y, (-1, 0, 1)).all():
        raise ValueError("rank_entries: targets must be in {1, 0, -1}")
    return p, y.astype(np.int8)


def rank_entries(probs: Any, targets: Any, *, check_observed: bool = False) -> Ranking:
    """Rank the candidate entries of ``targets`` by the confidence of their suggested value (module docstring).

    Args:
        probs: ``(N, C)`` out-of-sample probabilities of the positive class, in [0, 1] (array or tensor).
        targets: ``(N, C)`` current values in {1, 0, -1}.
        check_observed: Also rank the observed entries (negatives as possibly missed positives, positives as
            possibly wrong); otherwise only the unknown ones.

    Returns:
        A :class:`Ranking` of every candidate, ``rank = 1 .. M``.

    Raises:
        ValueError: Shapes differ, a probability is outside [0, 1] or not finite, a target outside {1, 0, -1}.
    """
    p, y = _check_inputs(probs, targets)
    candidate = np.ones_like(y, dtype=bool) if check_observed else y == -1
    rows, cols = np.nonzero(candidate)  # row-major: the tie order
    value = y[rows, cols]
    prob = p[rows, cols]
    suggested = np.where(value == 1, 0, 1).astype(np.int8)
    confidence = np.where(suggested == 1, prob, 1.0 - prob)
    order = np.argsort(-confidence, kind="stable")
    rank = np.arange(1, len(order) + 1, dtype=np.int64)
    return Ranking(
        rows[order].astype(np.int64),
        cols[order].astype(np.int64),
        value[order],
        prob[order],
        suggested[order],
        confidence[order],
        rank,
    )


def select(
    ranking: Ranking, *, top: int | None = None, per_class: int | None = None, min_prob: float | None = None
) -> Ranking:
    """Filter a ranking, in this order: ``min_prob``, then ``per_class``, then ``top``; ranks are kept.

    Args:
        ranking: From :func:`rank_entries`.
        top: Keep the first ``top`` entries.
        per_class: Keep at most the first ``per_class`` entries of each class.
        min_prob: Keep the entries whose suggested value is right with probability at least ``min_prob``
            (``p >= min_prob`` for a suggested positive, ``1 - p >= min_prob`` for a suggested negative).

    Raises:
        ConfigError: ``top`` or ``per_class`` below 1, ``min_prob`` outside [0, 1].
    """
    for name, n in (("--top", top), ("--per-class", per_class)):
        if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {n!r}")
    if min_prob is not None and not (isinstance(min_prob, (int, float)) and 0.0 <= min_prob <= 1.0):
        raise ConfigError(f"--min-prob must be a probability in [0, 1], got {min_prob!r}")
    out = ranking
    if min_prob is not None:
        out = out.take(out.confidence >= min_prob)
    if per_class is not None:
        seen: dict[int, int] = {}
        keep = np.zeros(len(out), dtype=bool)
        for k, j in enumerate(out.cols.tolist()):
            seen[j] = seen.get(j, 0) + 1
            keep[k] = seen[j] <= per_class
        out = out.take(keep)
    if top is not None:
        out = out.take(np.arange(min(int(top), len(out))))
    return out


def suggestions_text(ranking: Ranking, ids: list[str], class_names: list[str]) -> str:
    """The suggestions file's text (header and one row per entry of ``ranking``, in its order)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUGGESTION_COLUMNS)
    for i, j, v, p, r, s in zip(
        ranking.rows.tolist(),
        ranking.cols.tolist(),
        ranking.value.tolist(),
        ranking.probability.tolist(),
        ranking.rank.tolist(),
        ranking.suggested.tolist(),
        strict=True,
    ):
        w.writerow([ids[i], class_names[j], v, f"{p:.6f}", r, s])
    return buf.getvalue()


@dataclass(frozen=True)
class SuggestionFiles:
    """The files of one ``mlcl labels suggest`` output ``OUT.csv``.

    Attributes:
        csv: The suggestions file.
        scores: ``<stem>.scores.npz``: every entry's probability, the targets, ids and image files.
        meta: ``<stem>.json``: the data, the method and the per-class estimates.
        page: ``<stem>.html``: the review page.
        folds: ``<stem>.folds/``: the cross-fitting runs.
    """

    csv: Path
    scores: Path
    meta: Path
    page: Path
    folds: Path

    def outputs(self) -> tuple[Path, ...]:
        """The files a suggest call writes (the folds folder aside)."""
        return (self.csv, self.scores, self.meta, self.page)


def suggestion_files(csv_path: str | os.PathLike[str]) -> SuggestionFiles:
    """The :class:`SuggestionFiles` of a suggestions file path."""
    p = Path(csv_path)
    stem = p.with_suffix("") if p.suffix.lower() == ".csv" else p
    return SuggestionFiles(
        csv=p,
        scores=stem.with_name(stem.name + ".scores.npz"),
        meta=stem.with_name(stem.name + ".json"),
        page=stem.with_name(stem.name + ".html"),
        folds=stem.with_name(stem.name + ".folds"),
    )


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write the metadata file (``{"format": META_FORMAT, "version": 1, ...}``), atomically."""
    atomic_write_text(path, json.dumps({"format": META_FORMAT, "version": 1, **meta}, indent=1) + "\n")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a metadata file written by :func:`write_meta`.

    Raises:
        DataError: Missing, not JSON, or not a suggestions metadata file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: not found (the metadata file `mlcl labels suggest` writes beside its CSV)")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot be read ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DataError(f"{p}: not a label-suggestions metadata file (expected 'format': '{META_FORMAT}')")
    return meta


@dataclass(frozen=True)
class SuggestionRow:
    """One row of a suggestions file: its 1-based ``line`` and its parsed cells."""

    line: int
    filename: str
    class_name: str
    value: int
    probability: float
    rank: int
    suggested: int


def _int_cell(text: str, allowed: tuple[int, ...] | None) -> int | None:
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    value = int(number)
    return value if allowed is None or value in allowed else None


def read_suggestions(path: str | os.PathLike[str]) -> list[SuggestionRow]:
    """Read and check a suggestions file (columns :data:`SUGGESTION_COLUMNS`, in any order; others ignored).

    Raises:
        DataError: Missing file, a missing column, or rows with a bad cell (value not in {1, 0, -1}, probability
            not in [0, 1], rank not an integer >= 1, suggested not 0 or 1, empty file or class name) or repeating
            a (filename, class) entry; every problem names its line.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: suggestions file not found")
    problems = Problems(p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot be read as UTF-8 text ({type(e).__name__})") from None
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[SuggestionRow] = []
    seen: dict[tuple[str, str], int] = {}
    for line, cells in enumerate(reader, start=1):
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            missing = [c for c in SUGGESTION_COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"{p}: line {line}: the header lacks {', '.join(missing)} (a suggestions file has the columns "
                    f"{','.join(SUGGESTION_COLUMNS)})"
                )
            continue
        if len(cells) != len(header):
            problems.add(f"line {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        cell = {name: cells[header.index(name)].strip() for name in SUGGESTION_COLUMNS}
        value = _int_cell(cell["value"], (-1, 0, 1))
        rank = _int_cell(cell["rank"], None)
        suggested = _int_cell(cell["suggested"], (0, 1))
        try:
            prob = float(cell["probability"])
        except ValueError:
            prob = math.nan
        bad = [
            f"{name} {cell[name]!r}"
            for name, ok in (
                ("filename", bool(cell["filename"])),
                ("class", bool(cell["class"])),
                ("value", value is not None),
                ("probability", 0.0 <= prob <= 1.0),
                ("rank", rank is not None and rank >= 1),
                ("suggested", suggested is not None),
            )
            if not ok
        ]
        if bad:
            problems.add(f"line {line}: bad {', '.join(bad)}")
            continue
        key = (cell["filename"], cell["class"])
        if key in seen:
            problems.add(f"line {line}: ({key[0]}, {key[1]}) is already on line {seen[key]}")
            continue
        seen[key] = line
        assert value is not None and rank is not None and suggested is not None
        rows.append(SuggestionRow(line, cell["filename"], cell["class"], value, prob, rank, suggested))
    if header is None:
        raise DataError(f"{p}: empty file; expected the header {','.join(SUGGESTION_COLUMNS)}")
    problems.raise_if_any()
    return rows


def check_outputs(
    out: str | os.PathLike[str], label_file: str | os.PathLike[str] | None, *, overwrite: bool
) -> SuggestionFiles:
    """The outputs of a suggest call to ``out``, checked before any work.

    None may be the label file, and an existing one is refused without ``overwrite``.

    Raises:
        ConfigError: ``out`` is not a ``.csv`` path, would replace the label file, or exists without ``overwrite``.
    """
    files = suggestion_files(out)
    if files.csv.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: the suggestions file must end in .csv")
    if label_file is not None:
        source = Path(label_file).resolve()
        for path in files.outputs():
            if path.resolve() == source:
                raise ConfigError(f"--out {out}: {path} would replace the label file itself; choose another name")
    existing = [str(p) for p in files.outputs() if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"--out {out}: {', '.join(existing)} already exist; --overwrite replaces them")
    return files


def write_suggestion_files(
    files: SuggestionFiles,
    probs: Any,
    data: Any,
    *,
    check_observed: bool = False,
    top: int | None = None,
    per_class: int | None = None,
    min_prob: float | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[Ranking, Ranking]:
    """Rank, filter and write the suggestions of ``data`` (its targets) from ``probs``.

    Writes ``files.scores`` (every probability, :func:`mlcl.report.scores.save_scores`), ``files.csv`` and the
    metadata ``files.meta`` (``meta`` plus the classes, the filters, the counts and the per-class estimates of
    :func:`mlcl.labels.estimate.estimate_missing`). The review page ``files.page`` is built from these files
    alone: :func:`mlcl.report.review.write_review_page` (``mlcl labels suggest`` calls it next).

    Args:
        files: From :func:`check_outputs`.
        probs: ``(N, C)`` out-of-sample probabilities of ``data``'s images.
        data: The :class:`~mlcl.data.labelset.MultiLabelSet` scored (file items).
        check_observed: Rank the observed entries too.
        top: See :func:`select`.
        per_class: See :func:`select`.
        min_prob: See :func:`select`.
        meta: What the probabilities came from (data spec, method, folds...).

    Returns:
        ``(all candidates ranked, the rows written)``.
    """
    from mlcl.labels.estimate import estimate_missing
    from mlcl.report.scores import save_scores

    targets = np.asarray(data.targets)
    ranking = rank_entries(probs, targets, check_observed=check_observed)
    kept = select(ranking, top=top, per_class=per_class, min_prob=min_prob)
    p = np.asarray(probs, dtype=np.float32)
    items = [str(x) for x in data.items] if isinstance(data.items, list) else [""] * len(data)
    save_scores(files.scores, p, targets, list(data.ids), list(data.class_names), files=items)
    atomic_write_text(files.csv, suggestions_text(kept, list(data.ids), list(data.class_names)))
    estimates = [e.to_dict() for e in estimate_missing(p, targets, list(data.class_names))]
    write_meta(
        files.meta,
        {
            **(meta or {}),
            "classes": list(data.class_names),
            "check_observed": check_observed,
            "filters": {"top": top, "per_class": per_class, "min_prob": min_prob},
            "candidates": len(ranking),
            "rows": len(kept),
            "scores": files.scores.name,
            "estimates": estimates,
        },
    )
    return ranking, kept
