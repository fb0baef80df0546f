"""``mlcl compare RUN_DIR...``: finished runs grouped by configuration, seeds averaged, groups against a baseline.

Reads each run's ``config.yaml``, ``metrics.json`` and ``log.jsonl`` (a MulCon run: its ``stage2``, by
:func:`mlcl.report.run_folder.locate_run`); nothing is evaluated again. Runs are grouped by their resolved
configuration minus the seed and the run-control keys, or by the ``--group-by`` keys (dotted configuration keys, or
``name``: the run folder's name without its ``-s<seed>`` suffix); each group gets the mean and sample standard
deviation of mAP, CF1 and OF1 over its seeds, and the paired difference (over the seeds both hold) either of every
group to one baseline, or of each group to its own control (``--pair GROUP CONTROL``).

A pair names groups by ``key=value`` terms over the grouping keys, or by a group's full name; a partial spec
matches every group with those values, and its control is the group that has the control's values and the same
values for every other grouping key. With ``--group-by data.missing,loss.name``, ``--pair loss.name=hill+clml
loss.name=hill`` pairs ``hill+clml`` with ``hill`` under each missing-label protocol.
"""

from __future__ import annotations

import json
import math
import os
import re
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
from mlcl.report.run_folder import locate_run

__all__ = [
    "CompareError",
    "Comparison",
    "compare_runs",
    "load_run",
    "to_markdown",
    "unpredicted_note",
    "build_compare_page",
    "write_compare",
]

#: The pseudo grouping key of the run folder's name (``linear-s0`` and ``linear-s1`` are both ``linear``).
NAME_KEY = "name"
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
    name: str = ""
    time_s: float | None = None
    unpredicted: list[str] = field(default_factory=list)  #: metrics.json's ``unpredicted_classes``


@dataclass
class Delta:
    """The paired difference of one metric, group minus baseline, over the common seeds."""

    mean: float
    std: float
    pairs: int
    p: float


@dataclass
class Group:
    """Runs of one configuration, and their statistics; ``deltas`` and ``ap_delta`` are against ``control``."""

    name: str
    runs: list[Run]
    mean: dict[str, float]
    std: dict[str, float]
    ap_mean: np.ndarray
    deltas: dict[str, Delta] = field(default_factory=dict)
    ap_delta: np.ndarray | None = None
    values: dict[str, str] = field(default_factory=dict)
    control: str | None = None
    time_s: float = math.nan


@dataclass
class Comparison:
    """The groups, the baseline's index (``None`` when the groups are paired with their own controls), the classes."""

    groups: list[Group]
    baseline: int | None
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


def run_name(path: Path) -> str:
    """The run's name: its folder's name without a ``-s<seed>`` / ``_s<seed>`` suffix.

    A MulCon run's stage folder is ``<run name>/stage1``.
    """
    p = Path(os.path.abspath(path))
    name = re.sub(r"[-_]s\d+$", "", p.name)
    if re.fullmatch(r"stage\d+", p.name):
        name = re.sub(r"[-_]s\d+$", "", p.parent.name) + "/" + p.name
    return name


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read one finished run (a MulCon run: its ``stage2``).

    Raises:
        CompareError: The folder is missing or lacks metrics.json or config.yaml (the message names both).
    """
    import yaml

    root = Path(run_dir)
    if not root.is_dir():
        raise CompareError(f"{root}: no such run folder")
    located = locate_run(root)
    folder = located.stage
    if not (folder / "metrics.json").is_file():
        raise CompareError(f"{root}: no metrics.json: the run did not finish (continue it with `mlcl train --resume`)")
    config_path = located.config
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
    times: list[float] = []
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
                if isinstance(r.get("time_s"), (int, float)):
                    times.append(float(r["time_s"]))
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
        name=run_name(root),
        time_s=sum(times) if times else None,
        unpredicted=[str(x) for x in metrics.get("unpredicted_classes") or []],
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


def _keys(group_by: str | Sequence[str] | None) -> list[str] | None:
    if group_by is None:
        return None
    parts = [group_by] if isinstance(group_by, str) else list(group_by)
    keys = [k.strip() for part in parts for k in part.split(",") if k.strip()]
    if not keys:
        raise CompareError(f"--group-by {group_by!r}: no key")
    return keys


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    baseline: str | None = None,
    group_by: str | Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> Comparison:
    """Group the runs; compare every group with the baseline, or each group with its control in ``pairs``.

    Args:
        run_dirs: Finished run folders.
        baseline: A group name or a run folder (default: the first group); not with ``pairs``.
        group_by: Grouping keys (a list, or one string of comma-separated keys): dotted configuration keys or
            ``name`` (the folder's name without its seed suffix, :func:`run_name`). Default: every configuration
            key that differs between the runs, the seed and run-control keys left out.
        pairs: ``(group, control)`` specs (see the module docstring); each group has at most one control.

    Raises:
        CompareError: A run cannot be read, two runs have different classes, a group holds one seed twice, a
            ``group_by`` key is absent from a run's configuration, the baseline names no group or run, or a
            pair matches no group, has no control group, or gives a group a second control.
    """
    if not run_dirs:
        raise CompareError("no run folder given")
    if baseline is not None and pairs:
        raise CompareError("--baseline and --pair exclude each other: with pairs each group has its own control")
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
    by = _keys(group_by)
    buckets: dict[str, list[Run]] = {}
    experiments: dict[str, dict[str, Any]] = {}
    for r in runs:
        if by is not None:
            exp = {}
            for key in by:
                if key == NAME_KEY and key not in r.config:
                    exp[key] = r.name
                elif key not in r.config:
                    raise CompareError(f"{r.path}: no configuration key {key!r} to group by")
                else:
                    exp[key] = r.config[key]
        else:
            exp = _experiment(r)
        k = _key(exp)
        buckets.setdefault(k, []).append(r)
        experiments.setdefault(k, exp)
    if by is not None:
        keys = by
    else:
        all_keys = sorted({k for e in experiments.values() for k in e})
        keys = [k for k in all_keys if len({_key({k: e.get(k)}) for e in experiments.values()}) > 1]
    groups: list[Group] = []
    for k, members in buckets.items():
        exp = experiments[k]
        values = {key: _show(exp.get(key)) for key in keys}
        name = ",".join(f"{key}={v}" for key, v in values.items()) or "all runs"
        seen: dict[str, Run] = {}
        for r in members:
            s = _key({"seed": r.seed})
            if s in seen:
                raise CompareError(
                    f"{seen[s].path} and {r.path}: the same configuration and seed ({_show(r.seed)}) twice"
                )
            seen[s] = r
        times = [r.time_s for r in members if r.time_s is not None]
        groups.append(
            Group(
                name=name,
                runs=members,
                mean={m: float(np.mean([r.metrics[m] for r in members])) for m in METRICS},
                std={m: _sample_std([r.metrics[m] for r in members]) for m in METRICS},
                ap_mean=np.array([_nanmean_col(col) for col in np.stack([r.ap for r in members]).T]),
                values=values,
                time_s=float(np.mean(times)) if times else math.nan,
            )
        )
    if pairs:
        for spec, control in pairs:
            _apply_pair(groups, keys, spec, control)
        return Comparison(groups=groups, baseline=None, classes=list(first.classes), group_keys=keys)
    b = 0
    if baseline is not None:
        if base_run is not None:
            b = next(i for i, g in enumerate(groups) if any(r.path.resolve() == base_run for r in g.runs))
        else:
            names = [g.name for g in groups]
            if baseline not in names:
                raise CompareError(f"--baseline {baseline}: neither a run folder nor a group ({'; '.join(names)})")
            b = names.index(baseline)
    for i, g in enumerate(groups):
        if i != b:
            _pair(g, groups[b])
    return Comparison(groups=groups, baseline=b, classes=list(first.classes), group_keys=keys)


def _parse_spec(spec: str, keys: list[str], groups: list[Group]) -> dict[str, str]:
    """``key=value[,key=value...]`` over the grouping ``keys`` (values may hold commas), or a group's full name."""
    for g in groups:
        if g.name == spec:
            return dict(g.values)
    terms: list[list[str]] = []
    for part in spec.split(","):
        key = part.split("=", 1)[0]
        if "=" in part and key in keys:
            terms.append([key, part.split("=", 1)[1]])
        elif terms:
            terms[-1][1] += "," + part
        else:
            raise CompareError(
                f"--pair {spec}: not a group and not key=value over the grouping keys ({', '.join(keys) or 'none'})"
            )
    return dict((k, v) for k, v in terms)


def _apply_pair(groups: list[Group], keys: list[str], spec: str, control: str) -> None:
    want, ref = _parse_spec(spec, keys, groups), _parse_spec(control, keys, groups)
    matched = [g for g in groups if all(g.values.get(k) == v for k, v in want.items())]
    if not matched:
        raise CompareError(f"--pair {spec} {control}: no group matches {spec} ({'; '.join(g.name for g in groups)})")
    for g in matched:
        target = {**g.values, **ref}
        found = [c for c in groups if c.values == target]
        if not found:
            name = ",".join(f"{k}={v}" for k, v in target.items())
            raise CompareError(f"--pair {spec} {control}: no group {name} to pair {g.name} with")
        if found[0] is g:
            raise CompareError(f"--pair {spec} {control}: {g.name} would be paired with itself")
        if g.control is not None and g.control != found[0].name:
            raise CompareError(f"--pair {spec} {control}: {g.name} already has the control {g.control}")
        _pair(g, found[0])


def _nanmean_col(col: np.ndarray) -> float:
    return math.nan if np.isnan(col).all() else float(np.nanmean(col))


def _pair(g: Group, control: Group) -> None:
    """Set ``g``'s paired differences to ``control`` over the seeds both hold."""
    from scipy.stats import ttest_rel

    base = {_key({"seed": r.seed}): r for r in control.runs}
    g.control = control.name
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
    g.ap_delta = None
    if pairs:
        diffs = np.stack([r.ap - q.ap for r, q in pairs])
        g.ap_delta = np.array([_nanmean_col(c) for c in diffs.T])


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


#: The fewest seed pairs whose paired t-test p-value is shown without a caution.
MIN_PAIRS = 3


def _caution(d: Delta) -> str:
    """Why the p-value of ``d`` is weak (``""`` from :data:`MIN_PAIRS` pairs on)."""
    if d.pairs >= MIN_PAIRS or math.isnan(d.p):
        return ""
    return f"n = {d.pairs} pairs: too few to trust the p-value (1 degree of freedom)"


def _p_text(d: Delta) -> str:
    if math.isnan(d.p):
        return ""
    return f"p {d.p:.3g}" + (f"; n = {d.pairs} pairs, too few to trust" if _caution(d) else "")


def _delta_text(d: Delta | None) -> str:
    if d is None or d.pairs == 0:
        return ""
    s = f"{100 * d.mean:+.2f}" + ("" if math.isnan(d.std) else f" ± {100 * d.std:.2f}")
    return s + ("" if math.isnan(d.p) else f" ({_p_text(d)})")


def _delta_html(d: Delta) -> str:
    """The delta cell: mean ± std, then the p-value on its own line, with its caution under :data:`MIN_PAIRS`."""
    s = "<span class='d'>" + _e(f"{100 * d.mean:+.2f}" + ("" if math.isnan(d.std) else f" ± {100 * d.std:.2f}"))
    s += "</span>"
    if math.isnan(d.p):
        return s
    caution = _caution(d)
    s += f"<br><span class='p'>p {d.p:.3g}</span>"
    return s + (
        f"<br><span class='caution' title='{_e(caution)}'>n = {d.pairs}: too few pairs</span>" if caution else ""
    )


def _seeds(g: Group) -> str:
    return ",".join(_show(r.seed) for r in g.runs)


def _per_seed(g: Group, metric: str = "mAP") -> str:
    return ", ".join(f"{100 * r.metrics[metric]:.2f}" for r in g.runs)


def _time(g: Group) -> str:
    return "" if math.isnan(g.time_s) else f"{g.time_s:.0f}"


def _vs(c: Comparison, g: Group) -> str:
    """``g``'s control as the grouping terms where it differs from ``g`` (its full name when none differs)."""
    if g.control is None:
        return ""
    ref = next(x for x in c.groups if x.name == g.control)
    terms = [f"{k}={v}" for k, v in ref.values.items() if g.values.get(k) != v]
    return ",".join(terms) or g.control


def _is_reference(c: Comparison, i: int) -> bool:
    return c.baseline == i


def unpredicted_note(c: Comparison) -> str:
    """One sentence on the runs with classes never predicted positive (``metrics.json``'s ``unpredicted_classes``).

    Returns:
        ``""`` when no run has any; else, per group, the seeds and how many of the classes each misses.
    """
    parts = []
    for g in c.groups:
        hit = [r for r in g.runs if r.unpredicted]
        if hit:
            runs = ", ".join(f"seed {_show(r.seed)}: {len(r.unpredicted)}" for r in hit)
            parts.append(f"{g.name} ({runs})")
    if not parts:
        return ""
    return (
        f"Runs with classes that no image is predicted positive for at the run's threshold (of {len(c.classes)}; "
        f"CF1 counts each as 0 whatever its AP): {'; '.join(parts)}."
    )


def to_markdown(c: Comparison) -> str:
    """The comparison as a Markdown table (metrics in %; differences paired by seed, to the baseline or controls)."""
    paired = c.baseline is None
    head = ["group", "runs", "seeds"] + [f"{m} %" for m in METRICS] + ["mAP per seed", "s per run"]
    head += (["vs"] if paired else []) + ["pairs"] + [f"Δ{m}" + ("" if paired else " vs baseline") for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, g in enumerate(c.groups):
        compared = g.control is not None and not _is_reference(c, i)
        cells = [g.name + (" (baseline)" if _is_reference(c, i) else ""), str(len(g.runs)), _seeds(g)]
        cells += [_pct(g.mean[m], g.std[m]) for m in METRICS] + [_per_seed(g), _time(g)]
        if paired:
            cells.append(_vs(c, g))
        cells.append(str(g.deltas[METRICS[0]].pairs) if compared else "")
        cells += [_delta_text(g.deltas.get(m)) if compared else "" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    ref = (
        "Δ: against the group in the vs column (the grouping terms that differ)"
        if paired
        else f"Baseline: {c.groups[c.baseline].name if c.baseline is not None else ''}. Δ: against the baseline"
    )
    note = unpredicted_note(c)
    return (
        "\n".join(lines)
        + (
            f"\n\n{ref}, paired by seed (mean ± sample std of the per-seed differences, in percentage points), p: "
            f"paired t-test (with fewer than {MIN_PAIRS} pairs, marked: too few to trust). Metrics: mean ± sample "
            "std over seeds; s per run: training time from log.jsonl.\n"
        )
        + (f"\n{note}\n" if note else "")
    )


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


_CSS = """
body{max-width:1500px}
tr.baseline{background:#fbf8e8}td{white-space:nowrap}.wide{overflow-x:auto;max-width:100%}
#compare td:first-child{white-space:normal;min-width:10rem}#compare td.control{white-space:normal;min-width:6rem}
td.delta{white-space:normal}td.delta span{white-space:nowrap}td.delta .p{color:#555}
td.delta .caution{color:#b00;font-size:.8rem}
#runs td{white-space:normal;overflow-wrap:anywhere}#per-class th{overflow-wrap:anywhere;min-width:5rem}
"""


def _breakable(name: str) -> str:
    """A group name as HTML that may break after each comma (``key=value,key=value``)."""
    return ",<wbr>".join(_e(x) for x in name.split(","))


def _ap_delta_figure(c: Comparison) -> str:
    others = [g for i, g in enumerate(c.groups) if i != c.baseline and g.ap_delta is not None]
    paired = c.baseline is None
    n = len(c.classes)
    height = 0.25 * n * max(1, len(others)) ** 0.5
    fig, ax = F._figure(8, 1.2 + height)
    a = ax[0, 0]
    width = 0.8 / max(1, len(others))
    for k, g in enumerate(others):
        assert g.ap_delta is not None
        ys = np.arange(n) + (k - (len(others) - 1) / 2) * width
        a.barh(
            ys, np.nan_to_num(100 * g.ap_delta), height=width, label=f"{g.name} vs {g.control}" if paired else g.name
        )
    a.axvline(0, color="black", lw=0.8)
    a.set_yticks(range(n), F.display_names(c.classes), fontsize=8)
    a.invert_yaxis()
    ref = "the control" if c.baseline is None else c.groups[c.baseline].name
    a.set(xlabel=f"AP difference to {ref} (percentage points)", ylabel="class")
    if not others:
        a.text(0.5, 0.5, f"no group shares a seed with {ref}", transform=a.transAxes, ha="center")
    F.legends_below(fig, [(a, {})], size=(6.0, height + 0.2))
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
    all_epochs = sorted({e for g in c.groups for r in g.runs for e in r.curve})
    if all_epochs:
        F.epoch_ticks(a, all_epochs)
    else:
        a.text(0.5, 0.5, "no validation mAP in the logs", transform=a.transAxes, ha="center")
    F.legends_below(fig, [(a, {})], size=(5.5, 2.6))
    return F.to_svg(fig)


def build_compare_page(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (no script, nothing fetched)."""
    paired = c.baseline is None
    note = unpredicted_note(c)
    rows = []
    for i, g in enumerate(c.groups):
        is_base = _is_reference(c, i)
        compared = g.control is not None and not is_base
        cells = [
            f"<td>{_breakable(g.name)}{' (baseline)' if is_base else ''}</td><td>{len(g.runs)}</td>"
            f"<td>{_e(_seeds(g))}</td>"
        ]
        for m in METRICS:
            cells.append(
                f'<td class="metric" data-group="{_e(g.name)}" data-metric="{m}" data-mean="{_num(g.mean[m])}" '
                f'data-std="{_num(g.std[m])}">{_e(_pct(g.mean[m], g.std[m]))}</td>'
            )
        cells.append(f'<td class="time" data-time="{_num(g.time_s)}">{_time(g)}</td>')
        if paired:
            cells.append(f'<td class="control">{_breakable(_vs(c, g))}</td>')
        cells.append(f"<td>{g.deltas[METRICS[0]].pairs if compared else ''}</td>")
        for m in METRICS:
            d = g.deltas.get(m)
            if not compared or d is None:
                cells.append("<td></td>")
                continue
            cells.append(
                f'<td class="delta" data-group="{_e(g.name)}" data-control="{_e(g.control)}" data-metric="{m}" '
                f'data-delta="{_num(d.mean)}" data-delta-std="{_num(d.std)}" data-pairs="{d.pairs}" '
                f'data-p="{_num(d.p)}">{_delta_html(d)}</td>'
            )
        rows.append(
            f'<tr class="group-row{" baseline" if is_base else ""}" data-group="{_e(g.name)}">{"".join(cells)}</tr>'
        )
    head = "".join(f"<th>{m} %</th>" for m in METRICS) + "<th>s per run</th>" + ("<th>vs</th>" if paired else "")
    head += "<th>pairs</th>" + "".join(f"<th>Δ{m} (pp)</th>" for m in METRICS)
    ap_rows = []
    for j, name in enumerate(c.classes):
        class_cells = "".join(
            f'<td data-group="{_e(g.name)}" data-class="{_e(name)}" data-ap="{_num(g.ap_mean[j])}"'
            + (f' data-ap-delta="{_num(g.ap_delta[j])}"' if g.ap_delta is not None and i != c.baseline else "")
            + f">{'' if math.isnan(g.ap_mean[j]) else f'{100 * g.ap_mean[j]:.2f}'}</td>"
            for i, g in enumerate(c.groups)
        )
        ap_rows.append(f"<tr><td>{_e(name)}</td>{class_cells}</tr>")  # the full name (the figure shortens it)
    title = f"mlcl comparison: {len(c.groups)} group(s), {sum(len(g.runs) for g in c.groups)} run(s)"
    folders = "".join(
        f"<tr><td>{_breakable(g.name)}</td><td>{_e(_show(r.seed))}</td><td>{_e(r.path)}</td></tr>"
        for g in c.groups
        for r in g.runs
    )
    ref = "each group's control (the vs column)" if paired else "the baseline"
    base = "" if c.baseline is None else f"; baseline {_e(c.groups[c.baseline].name)}"
    body = (
        f"<h1>{_e(title)}</h1><p class='note'>Groups by "
        f"{_e(', '.join(c.group_keys) or 'configuration')}{base}. Metrics in %: mean ± sample "
        f"standard deviation over seeds. Δ: the mean ± sample std of the per-seed differences to {ref} over "
        "the seeds both groups hold; p: two-sided paired t-test (two pairs or more; with fewer than "
        f"{MIN_PAIRS} pairs, marked as too few to trust: one degree of freedom). s per run: the training time of "
        "log.jsonl.</p>"
        f"<div class='wide'><table id='compare'><tr><th>group</th><th>runs</th><th>seeds</th>{head}</tr>"
        f"{''.join(rows)}</table></div>"
        + (f"<p class='warn' id='unpredicted'>{_e(note)}</p>" if note else "")
        + f"<h2>Per-class AP difference to {ref}</h2><p class='note'>Mean over the common seeds, in percentage "
        "points.</p><div class='fig' id='fig-ap-delta'>"
        + F.strip_ids(_ap_delta_figure(c), "apd")
        + "</div><h2>Validation mAP</h2><div class='fig' id='fig-curves'>"
        + F.strip_ids(_curves_figure(c), "curves")
        + "</div><details><summary>Per-class AP (mean over seeds, %)</summary><div class='wide'><table "
        + "id='per-class'><tr><th>class</th>"
        + "".join(f"<th>{_breakable(g.name)}</th>" for g in c.groups)
        + "</tr>"
        + "".join(ap_rows)
        + "</table></div></details><h2>Runs</h2><div class='wide'><table id='runs'><tr><th>group</th><th>seed</th>"
        + "<th>folder</th></tr>"
        + folders
        + "</table></div>"
    )
    return page(title, body, _CSS)


def write_compare(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] = "compare.html",
    baseline: str | None = None,
    group_by: str | Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    markdown: str | os.PathLike[str] | None = None,
) -> tuple[Path, str]:
    """Compare the runs (:func:`compare_runs`) and write the HTML page to ``out`` atomically.

    The Markdown table also goes to ``markdown`` when given. Returns the page's path and the Markdown table.
    """
    c = compare_runs(run_dirs, baseline=baseline, group_by=group_by, pairs=pairs)
    page_text = build_compare_page(c)
    path = Path(out)
    atomic_write_text(path, page_text)
    table = to_markdown(c)
    if markdown is not None:
        atomic_write_text(Path(markdown), table)
    return path, table
