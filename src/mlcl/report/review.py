"""The review page of ``mlcl labels suggest``: one self-contained HTML file for the annotator.

Built from the suggestions' files alone (``<stem>.scores.npz``, ``<stem>.json``; nothing is trained or scored):
the estimated number of missing positives per class (figure and table, with how it is estimated), per class the
top suggested positives as thumbnails with their probability and rank, and the observed labels that the
out-of-sample scores contradict most (observed positives scored lowest, observed negatives scored highest).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.errors import DataError
from mlcl.report import figures as F
from mlcl.report._page import escape as _e
from mlcl.report._page import page
from mlcl.report.run_report import _thumbnail

__all__ = ["PER_CLASS", "SUSPECTS", "build_review_page", "write_review_page"]

#: Suggested positives shown per class.
PER_CLASS = 8
#: Suspected wrong observed labels shown, of each kind (positives, negatives).
SUSPECTS = 12

_CSS = """
.gallery{display:flex;flex-wrap:wrap;gap:.6rem}.gallery figure{margin:0;width:110px;font-size:.72rem}
.gallery img{width:96px;height:96px;object-fit:contain;border:1px solid #ccc;background:#fafafa}
.gallery figcaption{overflow-wrap:anywhere}.prob{font-weight:600}
#estimates td{text-align:right}#estimates td:first-child{text-align:left}
"""


def estimate_figure(names: list[str], positives: np.ndarray, estimate: np.ndarray, sd: np.ndarray) -> str:
    """Per class: observed positives and the estimated missing positives (stacked bars, +- 1 sd)."""
    c = len(names)
    fig, ax = F._figure(7, 0.9 + 0.24 * c)
    a = ax[0, 0]
    y = np.arange(c)[::-1]
    a.barh(y, positives, height=0.7, color="tab:blue", label="observed positives")
    a.barh(
        y,
        estimate,
        left=positives,
        height=0.7,
        color="tab:orange",
        label="estimated missing positives",
        xerr=sd,
        error_kw={"elinewidth": 0.8, "capsize": 2},
    )
    a.set_yticks(y, list(names), fontsize=8)
    a.set(ylim=(-0.6, c - 0.4), xlabel="images")
    a.grid(axis="y", visible=False)
    F.legends_below(fig, [(a, {"ncol": 2})])
    return F.to_svg(fig)


def _figure_cell(src: str, ident: str, name: str, prob: float, rank: int | None, value: int) -> str:
    rank_text = f"rank {rank}" if rank is not None else "not ranked"
    return (
        f'<figure class="suggestion" data-file="{_e(ident)}" data-class="{_e(name)}" data-prob="{prob!r}" '
        f'data-rank="{"" if rank is None else rank}" data-value="{value}"><img alt="{_e(ident)}" src="{src}">'
        f'<figcaption title="{_e(ident)}"><span class="prob">{100 * prob:.1f} %</span> {_e(rank_text)}<br>'
        f"{_e(name)}: {_e(Path(ident).name)}</figcaption></figure>"
    )


def _gallery(
    entries: list[tuple[int, int]],
    probs: np.ndarray,
    targets: np.ndarray,
    ids: list[str],
    files: list[str],
    names: list[str],
    rank_of: dict[tuple[int, int], int],
) -> str:
    cells = []
    for i, j in entries:
        src = _thumbnail(files[i]) if files[i] else None
        if src is None:
            continue
        cells.append(_figure_cell(src, ids[i], names[j], float(probs[i, j]), rank_of.get((i, j)), int(targets[i, j])))
    return '<div class="gallery">' + "".join(cells) + "</div>" if cells else "<p class='note'>No readable image.</p>"


def build_review_page(csv_path: str | os.PathLike[str], *, per_class: int = PER_CLASS, suspects: int = SUSPECTS) -> str:
    """The review page of the suggestions file ``csv_path`` (see the module docstring).

    Raises:
        DataError: The scores or metadata file beside ``csv_path`` is missing or does not match.
    """
    from mlcl.labels.estimate import estimate_missing
    from mlcl.labels.suggest import rank_entries, read_meta, suggestion_files
    from mlcl.report.scores import load_scores

    files = suggestion_files(csv_path)
    meta = read_meta(files.meta)
    s = load_scores(files.scores)
    names = s.class_names
    if list(meta.get("classes", [])) != names:
        raise DataError(f"{files.meta}: its classes differ from those of {files.scores}")
    probs, targets = s.scores.astype(np.float64), s.targets
    ranking = rank_entries(probs, targets, check_observed=bool(meta.get("check_observed")))
    rank_of = {
        (i, j): r for i, j, r in zip(ranking.rows.tolist(), ranking.cols.tolist(), ranking.rank.tolist(), strict=True)
    }
    est = estimate_missing(probs, targets, names)
    title = f"mlcl label review: {Path(str(meta.get('data', ''))).name or files.csv.name}"
    parts = [f"<h1>{_e(title)}</h1>"]
    if meta.get("method") == "run":
        how = (
            f"the model of the run {_e(meta.get('source', ''))}, which trained on {_e(meta.get('seen', '?'))} of these "
            "images: <b>in-sample scores, biased</b> (an unknown entry that the loss treated as negative scores low)"
        )
        parts.append(f"<p class='warn' id='in-sample'>Scores from {how}.</p>")
    else:
        how = (
            f"{_e(meta.get('folds'))}-fold cross-fitting: each image scored by a model trained on the other folds, "
            "never on it"
        )
    n_unknown = int((targets == -1).sum())
    parts.append(
        f"<p class='note'>Data: {_e(meta.get('data', ''))}; {len(s.ids)} images, {len(names)} classes, {n_unknown} "
        f"unknown entries. Scores: {how}. Suggestions file: {_e(files.csv.name)} ({_e(meta.get('rows', '?'))} of "
        f"{len(ranking)} ranked entries"
        f"{', observed entries included' if meta.get('check_observed') else ', unknown entries only'}).</p>"
    )
    pos = np.array([e.positives for e in est])
    parts.append(
        "<h2>Missing positives per class</h2><p class='note' id='estimate-method'>Estimated number of positives among "
        "each class's unknown entries: the sum of their probabilities after Platt calibration fitted on the class's "
        "observed entries (logistic regression of the observed label on the logit of the out-of-sample probability), "
        "&plusmn; one standard deviation (independent entries). This assumes that whether an entry is unknown does not "
        "depend on its label. A class with fewer than 5 observed positives or negatives is not calibrated: its "
        "estimate is the plain sum of probabilities (<i>raw</i>), which is only as good as the model's "
        "calibration.</p><div class='fig' id='fig-estimate'>"
        + F.strip_ids(
            estimate_figure(names, pos, np.array([e.estimate for e in est]), np.array([e.sd for e in est])), "est"
        )
        + "</div>"
    )
    rows = "".join(
        f'<tr class="estimate" data-class="{_e(e.name)}" data-estimate="{e.estimate!r}" data-method="{e.method}">'
        f"<td>{_e(e.name)}</td><td>{e.positives}</td><td>{e.negatives}</td><td>{e.unknown}</td><td>{e.raw:.1f}</td>"
        f"<td>{e.estimate:.1f} &plusmn; {e.sd:.1f}</td><td>{e.method}</td></tr>"
        for e in est
    )
    parts.append(
        "<table id='estimates'><tr><th>class</th><th>observed positives</th><th>observed negatives</th><th>unknown</th>"
        f"<th>sum of probabilities</th><th>estimated missing positives</th><th>calibration</th></tr>{rows}</table>"
    )
    parts.append(
        f"<h2>Top suggestions per class</h2><p class='note'>The {per_class} entries of each class most likely to be "
        "missing positives (unknown entries, and observed negatives when the suggestions include observed entries), "
        "with the probability of being positive and the rank in the suggestions.</p>"
    )
    for j, name in enumerate(names):
        top = [
            (i, c)
            for i, c, s_ in zip(ranking.rows.tolist(), ranking.cols.tolist(), ranking.suggested.tolist(), strict=True)
            if c == j and s_ == 1
        ][:per_class]
        body = _gallery(top, probs, targets, s.ids, s.files, names, rank_of) if top else "<p class='note'>None.</p>"
        parts.append(f'<section class="class" data-class="{_e(name)}"><h3>{_e(name)}</h3>{body}</section>')
    observed_pos = np.argwhere(targets == 1)
    observed_neg = np.argwhere(targets == 0)
    low = sorted(((int(i), int(j)) for i, j in observed_pos), key=lambda e: (probs[e], e))[:suspects]
    high = sorted(((int(i), int(j)) for i, j in observed_neg), key=lambda e: (-probs[e], e))[:suspects]
    parts.append(
        "<h2>Suspected wrong observed labels</h2><p class='note'>Observed labels that the out-of-sample scores "
        "contradict most (from every observed entry, whether or not the suggestions file includes them).</p>"
        "<h3>Observed positives with the lowest probability</h3><section id='suspect-positives'>"
        + (_gallery(low, probs, targets, s.ids, s.files, names, rank_of) if low else "<p class='note'>None.</p>")
        + "</section><h3>Observed negatives with the highest probability</h3><section id='suspect-negatives'>"
        + (_gallery(high, probs, targets, s.ids, s.files, names, rank_of) if high else "<p class='note'>None.</p>")
        + "</section>"
    )
    return page(title, "\n".join(parts), _CSS)


def write_review_page(
    csv_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **kwargs: Any
) -> Path:
    """Write :func:`build_review_page` to ``out`` (default ``<stem>.html`` beside the suggestions), atomically."""
    from mlcl.labels.suggest import suggestion_files

    path = Path(out) if out is not None else suggestion_files(csv_path).page
    atomic_write_text(path, build_review_page(csv_path, **kwargs))
    return path
