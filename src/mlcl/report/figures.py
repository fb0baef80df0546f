"""The report's figures (matplotlib, Agg backend) as inline SVG text, and the curves they draw.

Text stays text in the SVG (``svg.fonttype: none``): the page uses the browser's own sans-serif font, nothing is
fetched. Heights grow with the number of classes so that no label overlaps another.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["f1_vs_threshold", "legends_below", "pr_curve"]

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


def legends_below(fig: Any, legends: Sequence[tuple[Any, dict[str, Any]]], pad_pt: float = 3.0) -> None:
    """Lay the figure out, then put each axes' legend under everything the axes draw below itself.

    ``legends`` holds ``(axes, legend keywords)``. The legend's top is anchored ``pad_pt`` points below the
    lowest of the axes' tick labels and x label, measured after the layout, so it never overlaps them whatever
    the figure's size; the saved figure grows to hold it (``to_svg`` saves the tight bounding box). Call it last:
    a later ``tight_layout`` would move the axes away from the anchors.
    """
    fig.tight_layout()
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
    """Loss terms, learning rate and validation mAP/CF1/OF1 (raw and EMA weights) per epoch."""
    epochs = [r["epoch"] for r in log]
    fig, ax = _figure(10, 3.0, 1, 3)
    terms = sorted({k for r in log for k in r.get("train", {})})
    for k in terms:
        ax[0, 0].plot(epochs, [r.get("train", {}).get(k, np.nan) for r in log], marker="o", ms=3, label=k)
    ax[0, 0].set(title="training loss terms", xlabel="epoch", ylabel="mean per step")
    ax[0, 1].plot(epochs, [r.get("lr", np.nan) for r in log], marker="o", ms=3, color="tab:gray")
    ax[0, 1].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="learning rate")
    from matplotlib.ticker import FuncFormatter

    # the values on the ticks (no "1e-3" offset text above the axes, where it meets the title)
    ax[0, 1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    styles = {"model": "-", "ema": "--"}
    colours = {"mAP": "tab:blue", "CF1": "tab:orange", "OF1": "tab:green"}
    for weights, ls in styles.items():
        for m, colour in colours.items():
            ys = [100 * r["val"][weights][m] if weights in r.get("val", {}) else np.nan for r in log]
            if not np.all(np.isnan(ys)):
                ax[0, 2].plot(epochs, ys, ls, marker="o", ms=3, color=colour, label=f"{m} ({weights})")
    ax[0, 2].set(title="validation", xlabel="epoch", ylabel="%")
    for a in ax[0]:
        if best_epoch is not None:
            a.axvline(best_epoch, color="black", lw=0.8, ls=":", label=f"chosen epoch {best_epoch}")
        a.set_xticks(epochs if len(epochs) <= 12 else epochs[:: max(1, len(epochs) // 10)])
    legends_below(fig, [(ax[0, 0], {"ncol": 2}), (ax[0, 2], {"ncol": 2})])
    return to_svg(fig)


def per_class_ap(names: Sequence[str], ap: Sequence[float | None], n_pos: Sequence[int]) -> str:
    """Horizontal bars of per-class AP, best on top, labelled ``name (n positives)``."""
    rows = sorted(
        zip(names, ap, n_pos, strict=True), key=lambda r: -1.0 if r[1] is None else r[1]
    )  # ascending: the best ends on top of barh
    fig, ax = _figure(7, 0.8 + 0.22 * len(rows))
    a = ax[0, 0]
    vals = [0.0 if v is None else 100 * v for _, v, _ in rows]
    a.barh(range(len(rows)), vals, color="tab:blue", height=0.7)
    a.set_yticks(range(len(rows)), [f"{n} ({p})" for n, _, p in rows], fontsize=8)
    for i, (_, v, _) in enumerate(rows):
        a.text(vals[i] + 0.5, i, "n/a" if v is None else f"{100 * v:.1f}", va="center", fontsize=7)
    a.set(xlim=(0, 108), ylim=(-0.6, len(rows) - 0.4), xlabel="AP (%)", ylabel="class (test positives)")
    a.grid(axis="y", visible=False)
    fig.tight_layout()
    return to_svg(fig)


def pr_curves(curves: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """Precision-recall curves (label, precision, recall)."""
    fig, ax = _figure(7.0, 4.2)
    a = ax[0, 0]
    for label, p, r in curves:
        a.step(100 * r, 100 * p, where="post", lw=2.2 if label.startswith("micro") else 1.2, label=label)
    a.set(xlim=(0, 101), ylim=(0, 102), xlabel="recall (%)", ylabel="precision (%)")
    a.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
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
    fig.tight_layout()
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
    a.set_yticks(y, list(names), fontsize=8)
    a.set(ylim=(-0.6, c - 0.4), xlabel="training images")
    a.grid(axis="y", visible=False)
    legends_below(fig, [(a, {"ncol": 3})])
    return to_svg(fig)


def cooccurrence(names: Sequence[str], matrix: np.ndarray) -> str:
    """The training positives' co-occurrence matrix, as P(column | row) in %, the counts in small classes."""
    c = len(names)
    side = min(max(3.5, 0.16 * c + 1.5), 11.0)
    fig, ax = _figure(side + 1.0, side)
    a = ax[0, 0]
    diag = np.maximum(np.diag(matrix), 1)
    cond = 100 * matrix / diag[:, None]
    im = a.imshow(cond, cmap="Blues", vmin=0, vmax=100)
    # a tick label at most 70 % of a row's height (a 80-class matrix: about 7 pt), never above 8 pt
    fs = min(8.0, 0.7 * 72 * side * 0.85 / c)
    a.set_xticks(range(c), list(names), rotation=90, fontsize=fs)
    a.set_yticks(range(c), list(names), fontsize=fs)
    a.set(xlabel="co-occurring class", ylabel="class")
    a.grid(False)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                a.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                       color="white" if cond[i, j] > 60 else "black")  # fmt: skip
    fig.colorbar(im, ax=a, fraction=0.046, pad=0.04, label="% of the row class's images")
    fig.tight_layout()
    return to_svg(fig)


def strip_ids(svg: str, prefix: str) -> str:
    """Make the ids of one SVG unique within the page (clip paths of several figures would otherwise clash)."""
    return re.sub(r'(id="|url\(#|href="#)([A-Za-z_][\w.-]*)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
