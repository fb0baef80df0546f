"""The report's figures (matplotlib, Agg backend) as inline SVG text, and the curves they draw.

Text stays text in the SVG (``svg.fonttype: none``): the page uses the browser's own sans-serif font, nothing is
fetched. Heights grow with the number of classes so that no label overlaps another; class names longer than
:data:`~mlcl.report._page.LABEL_CHARS` are shortened with an ellipsis (:func:`display_names`; the page's tables hold
the full names), and a figure is sized around its axes from the labels' measured extent (:func:`fit_axes`), so that
long labels widen the figure instead of squeezing the axes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlcl.report._page import LABEL_CHARS, ellipsize

__all__ = ["display_names", "epoch_ticks", "f1_vs_threshold", "fit_axes", "legends_below", "pr_curve"]

_STYLE = {
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "mlcl",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def to_svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), closed afterwards."""
    plt = _plt()
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlcl"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    plt = _plt()
    with plt.rc_context(_STYLE):
        return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def display_names(names: Sequence[str], limit: int = LABEL_CHARS) -> list[str]:
    """The names as a figure shows them: each at most ``limit`` characters (:func:`ellipsize`), all distinct.

    Two long names that shorten alike get their position appended (``… [3]``), so that no two bars share a label.

    >>> display_names(["cat", "x" * 30 + "a", "x" * 30 + "b"], 12)
    ['cat', 'xxxxxxx…xxxa', 'xxxxxxx…xxxb']
    """
    short = [ellipsize(str(n), limit) for n in names]
    seen: dict[str, int] = {}
    for s in short:
        seen[s] = seen.get(s, 0) + 1
    return [s if seen[s] == 1 else f"{s} [{j}]" for j, s in enumerate(short)]


def fit_axes(fig: Any, width: float, height: float, pad: float = 0.08) -> None:
    """Size ``fig`` so that its axes span ``width`` x ``height`` inches plus what their labels and legends take.

    The decorations (tick labels, axis labels, titles, legends, a colour bar) are measured once drawn, in inches,
    and the figure is made that much larger than the axes on each side, ``pad`` inches beyond. Unlike
    ``tight_layout``, long labels widen the figure instead of squeezing the axes (and never raise its "Tight
    layout not applied" warning). For one axes (and its colour bar); text sizes are in points, so one pass holds.
    """
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    inner = Bbox.union([a.get_window_extent(renderer) for a in axes])
    outer = Bbox.union([inner, *[a.get_tightbbox(renderer) for a in axes]])
    dpi = fig.dpi
    left, right = (inner.x0 - outer.x0) / dpi + pad, (outer.x1 - inner.x1) / dpi + pad
    bottom, top = (inner.y0 - outer.y0) / dpi + pad, (outer.y1 - inner.y1) / dpi + pad
    w, h = width + left + right, height + bottom + top
    fig.set_size_inches(w, h)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)


def epoch_ticks(a: Any, epochs: Sequence[int]) -> None:
    """Integer ticks at the epochs (at most about a dozen), and room either side when there is one epoch."""
    ticks = list(epochs) if len(epochs) <= 12 else list(epochs)[:: max(1, len(epochs) // 10)]
    a.set_xticks(ticks)
    if len(set(epochs)) == 1:
        a.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)


def legends_below(
    fig: Any,
    legends: Sequence[tuple[Any, dict[str, Any]]],
    pad_pt: float = 3.0,
    size: tuple[float, float] | None = None,
) -> None:
    """Lay the figure out, then put each axes' legend under everything the axes draw below itself.

    ``legends`` holds ``(axes, legend keywords)``. The legend's top is anchored ``pad_pt`` points below the
    lowest of the axes' tick labels and x label, measured after the layout, so it never overlaps them whatever
    the figure's size; the saved figure grows to hold it (``to_svg`` saves the tight bounding box). The layout
    is ``tight_layout``, or with ``size`` (inches of the axes) :func:`fit_axes`, for one axes with labels of any
    length. Call it last: a later layout would move the axes away from the anchors.
    """
    if size is None:
        fig.tight_layout()
    else:
        fit_axes(fig, *size)
    renderer = fig.canvas.get_renderer()
    for a, kw in legends:
        if not a.get_legend_handles_labels()[0]:
            continue
        bottom = a.get_tightbbox(renderer).y0  # display pixels
        height = a.get_window_extent(renderer).height
        y = (bottom - a.get_window_extent(renderer).y0 - pad_pt * fig.dpi / 72) / height
        a.legend(**{"fontsize": 7, "frameon": False, **kw, "loc": "upper center", "bbox_to_anchor": (0.5, y)})


def pr_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score (descending) of one ranking; ``positive`` is boolean."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(p)[ends]
    n_pred = ends + 1
    total = max(int(p.sum()), 1)
    return np.r_[1.0, tp / n_pred], np.r_[0.0, tp / total]


def f1_vs_threshold(
    scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CF1 and OF1 at each global threshold, and each class's F1 at each threshold ``(T, C)``.

    CF1 is the harmonic mean of the per-class mean precision and recall, OF1 that of the overall ones (unknown
    targets, -1, are ignored), as in :func:`mlcl.metrics.threshold_metrics`.
    """
    observed = targets != -1
    pos = targets == 1
    cf1, of1, f1c = [], [], []
    for thr in thresholds:
        pred = (scores >= thr) & observed
        tp = (pred & pos).sum(0).astype(np.float64)
        n_pred = pred.sum(0).astype(np.float64)
        n_pos = pos.sum(0).astype(np.float64)
        p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
        r = np.divide(tp, n_pos, out=np.zeros_like(tp), where=n_pos > 0)
        cp, cr = p.mean(), r.mean()
        cf1.append(2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0)
        op = tp.sum() / n_pred.sum() if n_pred.sum() else 0.0
        orr = tp.sum() / n_pos.sum() if n_pos.sum() else 0.0
        of1.append(2 * op * orr / (op + orr) if op + orr > 0 else 0.0)
        f1c.append(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0))
    return np.array(cf1), np.array(of1), np.array(f1c)


def learning_curves(log: list[dict[str, Any]], best_epoch: int | None) -> str:
    """Loss terms, learning rate and validation mAP/CF1/OF1 (raw and EMA weights) per epoch.

    The total ``loss`` and each term it sums are drawn; a ``base`` term equal to the total (a loss of one term)
    is not drawn twice. Validation: one colour per metric; the model's weights solid with filled circles, the EMA
    weights dashed with open squares. Each line's SVG group has an id: ``train-<term>``, ``val-<metric>-<weights>``.
    """
    epochs = [r["epoch"] for r in log]
    fig, ax = _figure(10, 3.0, 1, 3)
    terms = sorted({k for r in log for k in r.get("train", {})})
    series = {k: np.array([r.get("train", {}).get(k, np.nan) for r in log], dtype=np.float64) for k in terms}
    if set(terms) == {"loss", "base"} and np.allclose(series["loss"], series["base"], rtol=1e-5, equal_nan=True):
        del series["base"]  # one term: the total is that term
    for k, ys in series.items():
        label = k if len(series) == 1 or k != "loss" else "loss (total)"
        (line,) = ax[0, 0].plot(epochs, ys, marker="o", ms=3, label=label)
        line.set_gid(f"train-{k}")
    ax[0, 0].set(title="training loss terms", xlabel="epoch", ylabel="mean per step")
    ax[0, 1].plot(epochs, [r.get("lr", np.nan) for r in log], marker="o", ms=3, color="tab:gray")
    ax[0, 1].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="learning rate")
    from matplotlib.ticker import FuncFormatter

    # the values on the ticks (no "1e-3" offset text above the axes, where it meets the title)
    ax[0, 1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    styles: dict[str, dict[str, Any]] = {
        "model": {"ls": "-", "marker": "o"},
        "ema": {"ls": "--", "marker": "s", "mfc": "white", "mew": 1.0},
    }
    colours = {"mAP": "tab:blue", "CF1": "tab:orange", "OF1": "tab:green"}
    for weights, style in styles.items():
        for m, colour in colours.items():
            val = [100 * r["val"][weights][m] if weights in r.get("val", {}) else np.nan for r in log]
            if not np.all(np.isnan(val)):
                (line,) = ax[0, 2].plot(epochs, val, ms=4, color=colour, label=f"{m} ({weights})", **style)
                line.set_gid(f"val-{m}-{weights}")
    ax[0, 2].set(title="validation", xlabel="epoch", ylabel="%")
    for a in ax[0]:
        if best_epoch is not None:
            a.axvline(best_epoch, color="black", lw=0.8, ls=":", label=f"chosen epoch {best_epoch}")
        epoch_ticks(a, epochs)
    legend = {"ncol": 2, "handlelength": 3.2}  # long handles: the EMA's dash shows
    handles, labels = ax[0, 2].get_legend_handles_labels()
    rank = [0 if "(model)" in x else 2 if "(ema)" in x else 1 for x in labels]  # a column of each weights
    order = sorted(range(len(labels)), key=lambda i: rank[i])
    val_legend = {**legend, "handles": [handles[i] for i in order], "labels": [labels[i] for i in order]}
    legends_below(fig, [(ax[0, 0], legend), (ax[0, 2], val_legend)])
    return to_svg(fig)


def per_class_ap(
    names: Sequence[str], ap: Sequence[float | None], n_pos: Sequence[int], evaluated: str = "test"
) -> str:
    """Horizontal bars of per-class AP, best on top, labelled ``name (n positives)``.

    Names are shortened (:func:`display_names`); the figure widens with the labels (:func:`fit_axes`).
    ``evaluated`` names the data the positives were counted in (the y axis says ``class (<evaluated> positives)``).
    """
    rows = sorted(
        zip(display_names(names), ap, n_pos, strict=True), key=lambda r: -1.0 if r[1] is None else r[1]
    )  # ascending: the best ends on top of barh
    fig, ax = _figure(7, 0.8 + 0.22 * len(rows))
    a = ax[0, 0]
    vals = [0.0 if v is None else 100 * v for _, v, _ in rows]
    a.barh(range(len(rows)), vals, color="tab:blue", height=0.7)
    a.set_yticks(range(len(rows)), [f"{n} ({p})" for n, _, p in rows], fontsize=8)
    for i, (_, v, _) in enumerate(rows):
        a.text(vals[i] + 0.5, i, "n/a" if v is None else f"{100 * v:.1f}", va="center", fontsize=7)
    a.set(xlim=(0, 108), ylim=(-0.6, len(rows) - 0.4), xlabel="AP (%)", ylabel=f"class ({evaluated} positives)")
    a.grid(axis="y", visible=False)
    fit_axes(fig, 5.0, 0.22 * len(rows) + 0.1)
    return to_svg(fig)


def pr_curves(curves: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """Precision-recall curves (label, precision, recall); labels shortened, the legend right of the axes."""
    fig, ax = _figure(7.0, 4.2)
    a = ax[0, 0]
    for label, p, r in curves:
        a.step(100 * r, 100 * p, where="post", lw=2.2 if label.startswith("micro") else 1.2, label=label)
    a.set(xlim=(0, 101), ylim=(0, 102), xlabel="recall (%)", ylabel="precision (%)")
    a.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fit_axes(fig, 4.6, 3.5)
    return to_svg(fig)


def threshold_tradeoff(thresholds: np.ndarray, cf1: np.ndarray, of1: np.ndarray, run_threshold: float) -> str:
    """CF1 and OF1 against a global threshold, the run's threshold marked."""
    fig, ax = _figure(5.5, 3.2)
    a = ax[0, 0]
    a.plot(thresholds, 100 * cf1, label="CF1")
    a.plot(thresholds, 100 * of1, label="OF1")
    a.axvline(run_threshold, color="black", lw=0.8, ls=":", label=f"run threshold {run_threshold:g}")
    a.set(xlim=(0, 1), ylim=(0, 100), xlabel="global threshold on the probability", ylabel="F1 (%)")
    a.legend(fontsize=7, frameon=False)
    fit_axes(fig, 4.6, 2.6)
    return to_svg(fig)


def train_counts(names: Sequence[str], observed: np.ndarray, hidden: np.ndarray | None, unknown: np.ndarray) -> str:
    """Training positives per class (stacked: observed, hidden by the protocol), and unknown entries."""
    c = len(names)
    fig, ax = _figure(7, 0.8 + 0.22 * c)
    a = ax[0, 0]
    y = np.arange(c)[::-1]
    a.barh(y, observed, height=0.7, color="tab:blue", label="observed positives")
    if hidden is not None:
        a.barh(y, hidden, left=observed, height=0.7, color="tab:orange", label="positives hidden by the protocol")
    if unknown.any():
        a.barh(y, unknown, left=observed + (hidden if hidden is not None else 0), height=0.7, color="lightgray",
               label="unknown (-1) entries")  # fmt: skip
    a.set_yticks(y, display_names(names), fontsize=8)
    a.set(ylim=(-0.6, c - 0.4), xlabel="training images")
    a.grid(axis="y", visible=False)
    legends_below(fig, [(a, {"ncol": 3})], size=(5.0, 0.22 * c + 0.1))
    return to_svg(fig)


def cooccurrence(names: Sequence[str], matrix: np.ndarray) -> str:
    """The training positives' co-occurrence as P(column | row) in %: colours, and the values written in small sets.

    ``matrix (C, C)`` holds the counts (the diagonal: each class's positives); cell ``(i, j)`` shows
    ``100 * matrix[i, j] / matrix[i, i]``, the share of the row class's images that also hold the column class,
    in the colour bar's unit.
    """
    c = len(names)
    side = min(max(3.5, 0.16 * c + 1.5), 11.0)
    fig, ax = _figure(side + 1.0, side)
    a = ax[0, 0]
    diag = np.maximum(np.diag(matrix), 1)
    cond = 100 * matrix / diag[:, None]
    im = a.imshow(cond, cmap="Blues", vmin=0, vmax=100)
    # a tick label at most 70 % of a row's height (a 80-class matrix: about 7 pt), never above 8 pt
    fs = min(8.0, 0.7 * 72 * side * 0.85 / c)
    shown = display_names(names)
    a.set_xticks(range(c), shown, rotation=90, fontsize=fs)
    a.set_yticks(range(c), shown, fontsize=fs)
    a.set(xlabel="co-occurring class", ylabel="class")
    a.grid(False)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                text = a.text(j, i, f"{cond[i, j]:.0f}", ha="center", va="center", fontsize=7,
                              color="white" if cond[i, j] > 60 else "black")  # fmt: skip
                text.set_gid(f"cell-{i}-{j}")
    fig.colorbar(im, ax=a, fraction=0.046, pad=0.04, label="% of the row class's images")
    fit_axes(fig, 0.85 * side, 0.85 * side)
    return to_svg(fig)


def strip_ids(svg: str, prefix: str) -> str:
    """Make the ids of one SVG unique within the page (clip paths of several figures would otherwise clash)."""
    return re.sub(r'(id="|url\(#|href="#)([A-Za-z_][\w.-]*)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
