"""``mlcl compare RUN_DIR...``: finished runs grouped by configuration, seeds averaged, groups against a baseline.

Reads each run's ``config.yaml``, ``metrics.json`` and ``log.jsonl`` (a MulCon run: its ``stage2``); nothing is
evaluated again. Runs are grouped by their resolved configuration minus the seed and the run-control keys (or by
one ``--group-by`` key); each group gets the mean and sample standard deviation of mAP, CF1 and OF1 over its
seeds, and every group but the baseline the paired difference to the baseline over the seeds both hold.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.errors import DataError
from mlcl.report import figures as F
from mlcl.report._page import escape as _e
from mlcl.report._page import page

__all__ = [
    "CompareError",
    "Comparison",
    "compare_runs",
    "load_run",
    "to_markdown",
    "build_compare_page",
    "write_compare",
]

#: The metrics compared (fractions in metrics.json; shown in %).
METRICS = ("mAP", "CF1", "OF1")
#: Configuration keys that never make two runs different experiments.
IGNORED_KEYS = frozenset(
    {
        "train.seed",
        "run.out",
        "run.overwrite",
        "run.progress",
        "run.tensorboard",
        "train.device",
        "data.num_workers",
        "train.stop_after",
        "train.checkpoint_every",
    }
)


class CompareError(DataError):
    """Runs that cannot be compared: the message names the folder(s) and what is wrong."""


@dataclass
class Run:
    """One finished run as the comparison reads it."""

    path: Path
    config: dict[str, Any]
    seed: Any
    classes: list[str]
    metrics: dict[str, float]
    ap: np.ndarray
    curve: dict[int, float] = field(default_factory=dict)


@dataclass
class Delta:
    """The paired difference of one metric, group minus baseline, over the common seeds."""

    mean: float
    std: float
    pairs: int
    p: float


@dataclass
class Group:
    """Runs of one configuration, and their statistics."""

    name: str
    runs: list[Run]
    mean: dict[str, float]
    std: dict[str, float]
    ap_mean: np.ndarray
    deltas: dict[str, Delta] = field(default_factory=dict)
    ap_delta: np.ndarray | None = None


@dataclass
class Comparison:
    """The groups (the baseline first among them by index ``baseline``) and the class names."""

    groups: list[Group]
    baseline: int
    classes: list[str]
    group_keys: list[str]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                out |= _flatten(v, key + ".")
            else:
                out[key] = v
    return out


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return str(v)


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read one finished run (a MulCon run: its ``stage2``).

    Raises:
        CompareError: The folder is missing or lacks metrics.json or config.yaml (the message names both).
    """
    import yaml

    root = Path(run_dir)
    if not root.is_dir():
        raise CompareError(f"{root}: no such run folder")
    folder = root
    if not (root / "metrics.json").is_file() and (root / "stage2" / "metrics.json").is_file():
        folder = root / "stage2"
    if not (folder / "metrics.json").is_file():
        raise CompareError(f"{root}: no metrics.json: the run did not finish (continue it with `mlcl train --resume`)")
    config_path = folder / "config.yaml" if (folder / "config.yaml").is_file() else root / "config.yaml"
    if not config_path.is_file():
        raise CompareError(f"{root}: no config.yaml: its configuration is unknown, so it cannot be grouped")
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise CompareError(f"{root}: cannot read metrics.json or config.yaml ({type(e).__name__})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("per_class_AP"), dict):
        raise CompareError(f"{root}: metrics.json has no per_class_AP")
    missing = [m for m in METRICS if not isinstance(metrics.get(m), (int, float))]
    if missing:
        raise CompareError(f"{root}: metrics.json has no {', '.join(missing)}")
    flat = _flatten(config)
    ap = metrics["per_class_AP"]
    curve: dict[int, float] = {}
    log_path = folder / "log.jsonl"
    if log_path.is_file():
        try:
            for line in log_path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                r = json.loads(line)
                val = r.get("val") or {}
                val = val.get("model", val)
                if isinstance(val, dict) and isinstance(val.get("mAP"), (int, float)) and "epoch" in r:
                    curve[int(r["epoch"])] = float(val["mAP"])
        except (OSError, ValueError) as e:
            raise CompareError(f"{log_path}: cannot read the per-epoch log ({type(e).__name__})") from None
    return Run(
        path=root,
        config=flat,
        seed=flat.get("train.seed"),
        classes=list(ap),
        metrics={m: float(metrics[m]) for m in METRICS},
        ap=np.array([np.nan if ap[c] is None else float(ap[c]) for c in ap], dtype=np.float64),
        curve=curve,
    )


def _experiment(run: Run) -> dict[str, Any]:
    """The configuration that defines the run's experiment (seed and run-control keys left out)."""
    return {
        k: v for k, v in run.config.items() if k not in IGNORED_KEYS and not (k == "data.missing_seed" and v is None)
    }


def _key(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def _sample_std(x: Sequence[float]) -> float:
    return float(np.std(x, ddof=1)) if len(x) >= 2 else math.nan


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    baseline: str | None = None,
    group_by: str | None = None,
) -> Comparison:
    """Group the runs and compare every group with the baseline (a group name or a run folder; default the first).

    Raises:
        CompareError: A run cannot be read, two runs have different classes, a group holds one seed twice, the
            ``group_by`` key is absent from a run's configuration, or the baseline names no group or run.
    """
    if not run_dirs:
        raise CompareError("no run folder given")
    runs = [load_run(d) for d in run_dirs]
    base_run: Path | None = None
    if baseline is not None and Path(baseline).is_dir():
        base_run = Path(baseline).resolve()
        if all(r.path.resolve() != base_run for r in runs):
            runs.append(load_run(baseline))
    first = runs[0]
    for r in runs[1:]:
        if r.classes != first.classes:
            diff = sorted(set(r.classes) ^ set(first.classes))
            why = f"classes {', '.join(diff[:3])} in one only" if diff else "the same classes in another order"
            raise CompareError(
                f"{first.path} and {r.path}: different class lists ({len(first.classes)} vs {len(r.classes)} "
                f"classes; {why})"
            )
    buckets: dict[str, list[Run]] = {}
    experiments: dict[str, dict[str, Any]] = {}
    for r in runs:
        if group_by is not None:
            if group_by not in r.config:
                raise CompareError(f"{r.path}: no configuration key {group_by!r} to group by")
            exp = {group_by: r.config[group_by]}
        else:
            exp = _experiment(r)
        k = _key(exp)
        buckets.setdefault(k, []).append(r)
        experiments.setdefault(k, exp)
    if group_by is not None:
        keys = [group_by]
    else:
        all_keys = sorted({k for e in experiments.values() for k in e})
        keys = [k for k in all_keys if len({_key({k: e.get(k)}) for e in experiments.values()}) > 1]
    groups: list[Group] = []
    for k, members in buckets.items():
        exp = experiments[k]
        name = ",".join(f"{key}={_show(exp.get(key))}" for key in keys) or "all runs"
        seen: dict[str, Run] = {}
        for r in members:
            s = _key({"seed": r.seed})
            if s in seen:
                raise CompareError(
                    f"{seen[s].path} and {r.path}: the same configuration and seed ({_show(r.seed)}) twice"
                )
            seen[s] = r
        groups.append(
            Group(
                name=name,
                runs=members,
                mean={m: float(np.mean([r.metrics[m] for r in members])) for m in METRICS},
                std={m: _sample_std([r.metrics[m] for r in members]) for m in METRICS},
                ap_mean=np.array([_nanmean_col(col) for col in np.stack([r.ap for r in members]).T]),
            )
        )
    b = 0
    if baseline is not None:
        if base_run is not None:
            b = next(i for i, g in enumerate(groups) if any(r.path.resolve() == base_run for r in g.runs))
        else:
            names = [g.name for g in groups]
            if baseline not in names:
                raise CompareError(f"--baseline {baseline}: neither a run folder nor a group ({'; '.join(names)})")
            b = names.index(baseline)
    _pair(groups, b)
    return Comparison(groups=groups, baseline=b, classes=list(first.classes), group_keys=keys)


def _nanmean_col(col: np.ndarray) -> float:
    return math.nan if np.isnan(col).all() else float(np.nanmean(col))


def _pair(groups: list[Group], b: int) -> None:
    from scipy.stats import ttest_rel

    base = {_key({"seed": r.seed}): r for r in groups[b].runs}
    for i, g in enumerate(groups):
        if i == b:
            continue
        pairs = [(r, base[s]) for r in g.runs if (s := _key({"seed": r.seed})) in base]
        for m in METRICS:
            x = np.array([r.metrics[m] for r, _ in pairs])
            y = np.array([q.metrics[m] for _, q in pairs])
            d = x - y
            p = math.nan
            if len(pairs) >= 2:
                p = float(ttest_rel(x, y).pvalue)
            g.deltas[m] = Delta(
                mean=float(d.mean()) if len(d) else math.nan, std=_sample_std(list(d)), pairs=len(pairs), p=p
            )
        if pairs:
            diffs = np.stack([r.ap - q.ap for r, q in pairs])
            g.ap_delta = np.array([_nanmean_col(c) for c in diffs.T])


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def _delta_text(d: Delta | None) -> str:
    if d is None or d.pairs == 0:
        return ""
    s = f"{100 * d.mean:+.2f}" + ("" if math.isnan(d.std) else f" ± {100 * d.std:.2f}")
    return s + ("" if math.isnan(d.p) else f" (p {d.p:.3g})")


def _seeds(g: Group) -> str:
    return ",".join(_show(r.seed) for r in g.runs)


def to_markdown(c: Comparison) -> str:
    """The comparison as a Markdown table (metrics in %; differences paired by seed, against the baseline)."""
    base = c.groups[c.baseline].name
    head = ["group", "runs", "seeds"] + [f"{m} %" for m in METRICS] + ["pairs"] + [f"Δ{m} vs baseline" for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, g in enumerate(c.groups):
        is_base = i == c.baseline
        cells = [g.name + (" (baseline)" if is_base else ""), str(len(g.runs)), _seeds(g)]
        cells += [_pct(g.mean[m], g.std[m]) for m in METRICS]
        cells.append("" if is_base else str(g.deltas[METRICS[0]].pairs))
        cells += ["" if is_base else _delta_text(g.deltas.get(m)) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\n".join(lines) + f"\n\nBaseline: {base}. Mean ± sample std over seeds; Δ: paired by seed, p: paired t-test.\n"
    )


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


_CSS = """
tr.baseline{background:#fbf8e8}td{white-space:nowrap}
"""


def _ap_delta_figure(c: Comparison) -> str:
    others = [g for i, g in enumerate(c.groups) if i != c.baseline and g.ap_delta is not None]
    n = len(c.classes)
    fig, ax = F._figure(8, 1.2 + 0.25 * n * max(1, len(others)) ** 0.5)
    a = ax[0, 0]
    width = 0.8 / max(1, len(others))
    for k, g in enumerate(others):
        assert g.ap_delta is not None
        ys = np.arange(n) + (k - (len(others) - 1) / 2) * width
        a.barh(ys, np.nan_to_num(100 * g.ap_delta), height=width, label=g.name)
    a.axvline(0, color="black", lw=0.8)
    a.set_yticks(range(n), c.classes, fontsize=8)
    a.invert_yaxis()
    a.set(xlabel=f"AP difference to {c.groups[c.baseline].name} (percentage points)", ylabel="class")
    if others:
        a.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.15 - 1.5 / (n + 4)))
    else:
        a.text(0.5, 0.5, "no group shares a seed with the baseline", transform=a.transAxes, ha="center")
    fig.tight_layout()
    return F.to_svg(fig)


def _curves_figure(c: Comparison) -> str:
    fig, ax = F._figure(7, 3.2)
    a = ax[0, 0]
    for g in c.groups:
        epochs = sorted({e for r in g.runs for e in r.curve})
        if not epochs:
            continue
        ys = [100 * float(np.mean([r.curve[e] for r in g.runs if e in r.curve])) for e in epochs]
        a.plot(epochs, ys, marker="o", ms=3, label=f"{g.name} (n={len(g.runs)})")
    a.set(title="validation mAP (mean over seeds)", xlabel="epoch", ylabel="mAP (%)")
    from matplotlib.ticker import MaxNLocator

    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    else:
        a.text(0.5, 0.5, "no validation mAP in the logs", transform=a.transAxes, ha="center")
    fig.tight_layout()
    return F.to_svg(fig)


def build_compare_page(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (no script, nothing fetched)."""
    base = c.groups[c.baseline]
    rows = []
    for i, g in enumerate(c.groups):
        is_base = i == c.baseline
        cells = [
            f"<td>{_e(g.name)}{' (baseline)' if is_base else ''}</td><td>{len(g.runs)}</td><td>{_e(_seeds(g))}</td>"
        ]
        for m in METRICS:
            cells.append(
                f'<td class="metric" data-group="{_e(g.name)}" data-metric="{m}" data-mean="{_num(g.mean[m])}" '
                f'data-std="{_num(g.std[m])}">{_e(_pct(g.mean[m], g.std[m]))}</td>'
            )
        cells.append(f"<td>{'' if is_base else g.deltas[METRICS[0]].pairs}</td>")
        for m in METRICS:
            d = g.deltas.get(m)
            if is_base or d is None:
                cells.append("<td></td>")
                continue
            cells.append(
                f'<td class="delta" data-group="{_e(g.name)}" data-metric="{m}" data-delta="{_num(d.mean)}" '
                f'data-delta-std="{_num(d.std)}" data-pairs="{d.pairs}" data-p="{_num(d.p)}">'
                f"{_e(_delta_text(d))}</td>"
            )
        rows.append(
            f'<tr class="group-row{" baseline" if is_base else ""}" data-group="{_e(g.name)}">{"".join(cells)}</tr>'
        )
    head = "".join(f"<th>{m} %</th>" for m in METRICS) + "<th>pairs</th>"
    head += "".join(f"<th>Δ{m} (pp)</th>" for m in METRICS)
    ap_rows = []
    for j, name in enumerate(c.classes):
        class_cells = "".join(
            f'<td data-group="{_e(g.name)}" data-class="{_e(name)}" data-ap="{_num(g.ap_mean[j])}"'
            + (f' data-ap-delta="{_num(g.ap_delta[j])}"' if g.ap_delta is not None and i != c.baseline else "")
            + f">{'' if math.isnan(g.ap_mean[j]) else f'{100 * g.ap_mean[j]:.2f}'}</td>"
            for i, g in enumerate(c.groups)
        )
        ap_rows.append(f"<tr><td>{_e(name)}</td>{class_cells}</tr>")
    title = f"mlcl comparison: {len(c.groups)} group(s), {sum(len(g.runs) for g in c.groups)} run(s)"
    folders = "".join(
        f"<tr><td>{_e(g.name)}</td><td>{_e(_show(r.seed))}</td><td>{_e(r.path)}</td></tr>"
        for g in c.groups
        for r in g.runs
    )
    body = (
        f"<h1>{_e(title)}</h1><p class='note'>Groups by "
        f"{_e(', '.join(c.group_keys) or 'configuration')}; baseline {_e(base.name)}. Metrics in %: mean ± sample "
        "standard deviation over seeds. Δ: the mean ± sample std of the per-seed differences to the baseline over "
        "the seeds both groups hold; p: two-sided paired t-test (two pairs or more).</p>"
        f"<table id='compare'><tr><th>group</th><th>runs</th><th>seeds</th>{head}</tr>{''.join(rows)}</table>"
        "<h2>Per-class AP difference to the baseline</h2><p class='note'>Mean over the common seeds, in percentage "
        "points.</p><div class='fig' id='fig-ap-delta'>"
        + F.strip_ids(_ap_delta_figure(c), "apd")
        + "</div><h2>Validation mAP</h2><div class='fig' id='fig-curves'>"
        + F.strip_ids(_curves_figure(c), "curves")
        + "</div><details><summary>Per-class AP (mean over seeds, %)</summary><table id='per-class'><tr><th>class"
        + "</th>"
        + "".join(f"<th>{_e(g.name)}</th>" for g in c.groups)
        + "</tr>"
        + "".join(ap_rows)
        + "</table></details><h2>Runs</h2><table id='runs'><tr><th>group</th><th>seed</th><th>folder</th></tr>"
        + folders
        + "</table>"
    )
    return page(title, body, _CSS)


def write_compare(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] = "compare.html",
    baseline: str | None = None,
    group_by: str | None = None,
) -> tuple[Path, str]:
    """Compare the runs, write the HTML page to ``out`` atomically; returns its path and the Markdown table."""
    c = compare_runs(run_dirs, baseline=baseline, group_by=group_by)
    page = build_compare_page(c)
    path = Path(out)
    atomic_write_text(path, page)
    return path, to_markdown(c)
