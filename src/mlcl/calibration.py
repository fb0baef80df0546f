"""Per-class decision thresholds chosen on labelled data, and their sidecar file ``thresholds.json``.

The search (:func:`choose_thresholds`) sorts each class's observed scores once (``O(N log N)`` per class, all
classes at once) and evaluates every candidate threshold from cumulative counts. A prediction is positive when
``prob >= threshold``; the candidates are the distinct observed scores of the class, and the threshold chosen
is one of them (the lowest score still predicted positive). Unknown entries (``-1``) are ignored.

Objectives:

* ``f1``: the threshold with the highest F1 of the class; among equal F1 the highest threshold.
* ``precision@R``: the lowest threshold whose precision is ``>= R``.
* ``recall@P``: the highest threshold whose recall is ``>= P``.

Fallback rule: a class with fewer than ``min_positives`` observed positives, or where the objective cannot be
met (F1 stays 0, or the precision target is never reached), keeps the global threshold; the sidecar lists those
classes with the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mlcl._io import atomic_write_text
from mlcl.errors import CheckpointError, ConfigError

__all__ = [
    "SIDECAR_NAME",
    "Thresholds",
    "choose_thresholds",
    "parse_objective",
    "per_class_threshold_metrics",
    "sidecar_path",
]

#: File name of the thresholds sidecar, beside the checkpoint.
SIDECAR_NAME = "thresholds.json"


def parse_objective(objective: str) -> tuple[str, float | None]:
    """``"f1"`` -> ``("f1", None)``; ``"precision@0.9"`` -> ``("precision", 0.9)``; ``"recall@0.8"`` likewise."""
    text = objective.strip().lower()
    if text == "f1":
        return "f1", None
    kind, sep, value = text.partition("@")
    if sep and kind in ("precision", "recall"):
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0 < target <= 1:
            return kind, target
        raise ConfigError(f"--objective {objective}: the target after @ must be a number in (0, 1]")
    raise ConfigError(f"--objective {objective}: expected f1, precision@R or recall@P (e.g. precision@0.9)")


@dataclass
class Thresholds:
    """Per-class thresholds and how they were chosen (the content of ``thresholds.json``)."""

    class_names: list[str]
    thresholds: list[float]
    objective: str
    global_threshold: float
    min_positives: int
    fallback: dict[str, str] = field(default_factory=dict)  # class name -> reason it kept the global threshold
    n_positives: list[int] = field(default_factory=list)
    data: str | None = None
    n_images: int = 0
    checkpoint: str | None = None

    def tensor(self) -> Tensor:
        """The thresholds as a float32 ``(C,)`` tensor."""
        return torch.tensor(self.thresholds, dtype=torch.float32)

    def to_json(self) -> str:
        """The sidecar's text."""
        return json.dumps({"format": "mlcl-thresholds/1", **asdict(self)}, indent=2)

    def save(self, path: str | Path) -> None:
        """Write the sidecar atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        """Read a sidecar; a malformed one is a :class:`~mlcl.errors.CheckpointError` naming the file."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
            raw.pop("format", None)
            out = cls(**raw)
            if len(out.thresholds) != len(out.class_names) or not all(
                isinstance(t, (int, float)) and 0 <= t <= 1 for t in out.thresholds
            ):
                raise ValueError("thresholds must be C numbers in [0, 1]")
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"thresholds file {p} is unreadable: {e}") from None
        return out


def sidecar_path(checkpoint: str | Path) -> Path:
    """``thresholds.json`` in the folder of ``checkpoint`` (a file, or a run folder)."""
    p = Path(checkpoint)
    return (p if p.is_dir() else p.parent) / SIDECAR_NAME


def choose_thresholds(
    probs: Tensor,
    targets: Tensor,
    class_names: list[str],
    *,
    objective: str = "f1",
    min_positives: int = 5,
    global_threshold: float = 0.5,
) -> Thresholds:
    """One threshold per class on labelled data (see the module's docstring for the rules).

    Args:
        probs: ``(N, C)`` probabilities.
        targets: ``(N, C)`` in {1, 0, -1}.
        class_names: ``C`` names.
        objective: ``f1``, ``precision@R`` or ``recall@P``.
        min_positives: Classes with fewer observed positives keep ``global_threshold``.
        global_threshold: The fallback threshold.
    """
    kind, target = parse_objective(objective)
    if min_positives < 1:
        raise ConfigError(f"--min-positives must be >= 1, got {min_positives}")
    if probs.shape != targets.shape or probs.dim() != 2 or probs.shape[1] != len(class_names):
        raise ConfigError(f"scores {tuple(probs.shape)} and targets {tuple(targets.shape)} do not match")
    p = probs.detach().to(torch.float64).cpu()
    t = targets.detach().cpu()
    observed = t != -1
    positive = t == 1
    n, c = p.shape
    # sort each class's scores once, descending; unknown entries go last (-inf) and are never candidates
    keyed = p.masked_fill(~observed, float("-inf"))
    s, order = keyed.sort(dim=0, descending=True, stable=True)
    obs_s = observed.gather(0, order)
    pos_s = positive.gather(0, order)
    tp = pos_s.cumsum(0).to(torch.float64)
    npred = obs_s.cumsum(0).to(torch.float64)
    n_pos = positive.sum(0)
    # a candidate is the last entry of a group of equal observed scores: predicting ">= s[i]" predicts rows 0..i
    nxt_differs = torch.ones_like(obs_s)
    if n > 1:
        nxt_differs[:-1] = (s[1:] != s[:-1]) | ~obs_s[1:]
    cand = obs_s & nxt_differs
    P = n_pos.to(torch.float64).clamp_min(1)
    precision = tp / npred.clamp_min(1)
    recall = tp / P
    idx = torch.arange(n).unsqueeze(1).expand(n, c)
    if kind == "f1":
        f1 = 2 * tp / (npred + n_pos.to(torch.float64))
        score = f1.masked_fill(~cand, -1.0)
        best = score.argmax(0)  # first maximum: the highest threshold among equal F1
        ok = score.gather(0, best.unsqueeze(0))[0] > 0
    elif kind == "precision":
        assert target is not None
        good = cand & (precision >= target)
        best = torch.where(good, idx, torch.full_like(idx, -1)).max(0).values  # lowest threshold: last index
        ok = best >= 0
    else:
        assert target is not None
        good = cand & (recall >= target)
        best = torch.where(good, idx, torch.full_like(idx, n)).min(0).values  # highest threshold: first index
        ok = best < n
    chosen = s.gather(0, best.clamp(0, max(n - 1, 0)).unsqueeze(0))[0] if n else torch.zeros(c, dtype=torch.float64)
    thresholds: list[float] = []
    fallback: dict[str, str] = {}
    for j, name in enumerate(class_names):
        if int(n_pos[j]) < min_positives:
            fallback[name] = f"{int(n_pos[j])} positive(s) < --min-positives {min_positives}"
        elif not bool(ok[j]):
            fallback[name] = f"objective {objective} not reachable"
        if name in fallback:
            thresholds.append(float(global_threshold))
        else:
            thresholds.append(float(chosen[j]))
    return Thresholds(
        class_names=list(class_names),
        thresholds=thresholds,
        objective=objective,
        global_threshold=float(global_threshold),
        min_positives=int(min_positives),
        fallback=fallback,
        n_positives=[int(v) for v in n_pos.tolist()],
        n_images=int(n),
    )


def per_class_threshold_metrics(probs: Tensor, targets: Tensor, thresholds: Tensor) -> dict[str, float]:
    """CP/CR/CF1/OP/OR/OF1 with one threshold per class (same definitions as :func:`mlcl.metrics.threshold_metrics`)."""
    from mlcl.metrics.functional import _counts, _threshold_metrics64

    t = targets.detach().cpu()
    positive = t == 1
    pred = (probs.detach().cpu().float() >= thresholds.float().view(1, -1)) & (t != -1)
    out = _threshold_metrics64(*_counts(pred, positive, positive.sum(0)))
    return {k: float(out[k]) for k in ("CP", "CR", "CF1", "OP", "OR", "OF1") if not math.isnan(float(out[k]))}


@torch.no_grad()
def calibrate_training(
    t: Any,
    run_dir: Path,
    metrics: dict[str, Any],
    *,
    val: tuple[Tensor, Tensor],
    report: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """``run.calibrate`` at the end of training: thresholds on the validation split, compared on the report split.

    Args:
        t: The :class:`~mlcl.engine.build.Training` (its configuration, class names and data sources).
        run_dir: Where ``thresholds.json`` is written (beside ``best.pt``).
        metrics: The final report (``metrics.json``) to extend.
        val: ``(probs (N, C), targets (N, C))`` of the best checkpoint on the validation split.
        report: The same on the report split (the final report's own scores: the model is not run again).

    Returns:
        ``metrics`` with a ``calibration`` entry: CF1/OF1 at the global threshold and at the per-class
        thresholds on the report split.
    """
    cfg = t.cfg
    th = choose_thresholds(
        val[0], val[1], t.class_names, objective=cfg.run.calibrate, global_threshold=cfg.run.threshold
    )
    th.data = f"{t.data.val.source or cfg.data.train} (validation split)"
    th.checkpoint = "best.pt"
    th.save(Path(run_dir) / SIDECAR_NAME)
    probs, targets = report
    glob = per_class_threshold_metrics(probs, targets, torch.full((len(t.class_names),), cfg.run.threshold))
    per = per_class_threshold_metrics(probs, targets, th.tensor())
    return {
        **metrics,
        "calibration": {
            "objective": cfg.run.calibrate,
            "chosen_on": "val",
            "evaluated_on": metrics.get("split", "val"),
            "global": {k: glob[k] for k in ("CF1", "OF1")},
            "per_class": {k: per[k] for k in ("CF1", "OF1")},
            "fallback": th.fallback,
            "thresholds_file": SIDECAR_NAME,
        },
    }
