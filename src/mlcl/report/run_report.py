"""``mlcl report RUN_DIR``: one run folder as one self-contained HTML page (read from the folder, no model run)."""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.errors import DataError
from mlcl.report import figures as F
from mlcl.report._page import ellipsize, page, short_label
from mlcl.report._page import escape as _e
from mlcl.report.run_folder import RunFolder, locate_run
from mlcl.report.scores import SCORES_FILE, TRAIN_LABELS_FILE, Scores, load_scores, load_train_labels

__all__ = ["build_run_report", "write_run_report"]

#: Classes shown in the precision-recall figure: the best and the worst few.
PR_CLASSES = 3
#: The most confident mistakes shown as thumbnails.
GALLERY = 12

_CSS = """
h1{margin-bottom:.2rem}
.summary{display:flex;gap:1.5rem;flex-wrap:wrap;margin:1rem 0}.summary div{background:#f4f6f8;padding:.5rem .9rem;
border-radius:4px}.summary b{display:block;font-size:1.3rem}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem}.gallery figure{margin:0;width:150px;font-size:.75rem;min-width:0}
.gallery figcaption b{display:block}
#run-info td{overflow-wrap:anywhere}
.gallery img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc}
pre{background:#f7f7f7;padding:.6rem;font-size:.8rem;overflow:auto;max-height:30rem}
details summary{cursor:pointer}#run-info td{text-align:left}
"""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the {what} ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _resolve(run_dir: Path) -> RunFolder:
    """The run's files (:func:`mlcl.report.run_folder.locate_run`), checked: the report's inputs exist."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    if not any(run_dir.iterdir()):
        raise DataError(f"{run_dir}: the folder is empty (not a run folder: no metrics.json, log.jsonl, config.yaml)")
    run = locate_run(run_dir)
    for name, why in (
        ("metrics.json", "the run did not finish (continue it with `mlcl train --resume`)"),
        ("log.jsonl", "not a run folder"),
        (SCORES_FILE, "the run was written by an older mlcl; evaluate best.pt with `mlcl eval --scores`"),
    ):
        if not (run.stage / name).is_file():
            raise DataError(f"{run.stage}: no {name}: {why}")
    return run


def _thumbnail(path: str) -> str | None:
    """A small PNG of an image file as a data URL, or ``None`` when it cannot be read."""
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # upright, as mlcl reads it
            im.thumbnail((96, 96))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except Exception:  # noqa: BLE001 - an unreadable image just has no thumbnail
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _array_thumbnail(array: np.ndarray) -> str:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(array))
    im.thumbnail((96, 96))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _builtin_images(ids: list[str]) -> dict[str, np.ndarray]:
    """The in-memory images of the built-in dataset's ``builtin/<split>/<i>`` ids."""
    from mlcl.data.builtin import load_builtin

    out: dict[str, np.ndarray] = {}
    for split in sorted({i.split("/")[1] for i in ids if i.count("/") == 2}):
        items = load_builtin(split).items
        for i in ids:
            parts = i.split("/")
            if len(parts) == 3 and parts[1] == split and parts[2].isdigit() and isinstance(items, np.ndarray):
                out[i] = items[int(parts[2])]
    return out


def display_paths(paths: list[str]) -> list[str]:
    """Each path's shortest ending, in whole path components, that no other of ``paths`` shares.

    The file name alone where it is unique; otherwise as many parent folders as tell it apart (a path that is
    the ending of another is shown whole).

    >>> display_paths(["../../a/images/1.jpg", "../../b/images/2.jpg", "x/cat/1.png", "y/dog/1.png"])
    ['1.jpg', '2.jpg', 'cat/1.png', 'dog/1.png']
    """
    parts = [[q for q in p.replace("\\", "/").split("/") if q not in ("", ".")] or [p] for p in paths]
    depth = [1] * len(paths)
    for _ in range(max((len(q) for q in parts), default=0)):
        shown = ["/".join(q[-d:]) for q, d in zip(parts, depth, strict=True)]
        clash = {s for s in shown if shown.count(s) > 1}
        if not clash:
            break
        depth = [d + 1 if s in clash and d < len(q) else d for q, d, s in zip(parts, depth, shown, strict=True)]
    return ["/".join(q[-d:]) for q, d in zip(parts, depth, strict=True)]


def _classes(names: list[str]) -> str:
    return ", ".join(short_label(n, 24) for n in names) or "-"


def _gallery(s: Scores, threshold: float) -> tuple[str, int]:
    """The images with the most confident mistakes: (HTML, number shown).

    Each caption names the image by the shortest ending of its path that tells it from the others shown
    (:func:`display_paths`; in-memory items by their id), the full path on hover; class names are shortened the
    same way (:func:`mlcl.report._page.short_label`).
    """
    observed = s.targets != -1
    wrong = observed & ((s.scores >= threshold) != (s.targets == 1))
    conf = np.where(wrong, np.abs(s.scores - (s.targets == 1)), 0.0).max(1)
    order = [int(i) for i in np.argsort(-conf, kind="stable") if conf[i] > 0][: GALLERY * 3]
    builtin = _builtin_images([s.ids[i] for i in order if s.ids[i].startswith("builtin/")])
    shown: list[tuple[int, str]] = []
    for i in order:
        src = _thumbnail(s.files[i]) if s.files[i] else None
        if src is None and s.ids[i] in builtin:
            src = _array_thumbnail(builtin[s.ids[i]])
        if src is None:
            continue
        shown.append((i, src))
        if len(shown) == GALLERY:
            break
    full = [s.files[i] or s.ids[i] for i, _ in shown]
    on_disk = [i for i, (k, _) in enumerate(shown) if s.files[k]]
    names = [s.ids[i] for i, _ in shown]
    for i, short in zip(on_disk, display_paths([full[i] for i in on_disk]), strict=True):
        names[i] = short
    cells = []
    for (i, src), path, name in zip(shown, full, names, strict=True):
        truth = [n for n, t in zip(s.class_names, s.targets[i], strict=True) if t == 1]
        pred = [n for n, p in zip(s.class_names, s.scores[i], strict=True) if p >= threshold]
        fp = [n for n in pred if n not in truth]
        fn = [n for n in truth if n not in pred]
        cells.append(
            f'<figure title="{_e(path)}" data-path="{_e(path)}"><img alt="{_e(path)}" src="{src}"><figcaption>'
            f"<b>{_e(ellipsize(name))}</b>true: {_classes(truth)}<br>predicted: {_classes(pred)}<br>"
            f'<span style="color:#b00">FP: {_classes(fp)}; FN: {_classes(fn)}</span>'
            f"<br>worst confidence {conf[i]:.2f}</figcaption></figure>"
        )
    return '<div class="gallery">' + "".join(cells) + "</div>", len(cells)


def _evaluated(run: RunFolder, metrics: dict[str, Any]) -> tuple[str, str]:
    """What the page's metrics were computed on: (a short name for axis labels, one HTML sentence).

    ``metrics.json``'s ``split`` is ``test``, or ``val`` for a run without test data; a run whose validation
    data was held out of its training data records the hold-out in ``split.json`` (the stage's folder).
    """
    split, data = str(metrics.get("split", "test")), str(metrics.get("data", ""))
    if split == "test":
        return "test", f"Evaluated on the test data {_e(data)}".rstrip()
    held = next((p for p in (run.stage / "split.json", run.root / "split.json") if p.is_file()), None)
    counts = _read_json(held, "hold-out split") if held is not None else None
    if isinstance(counts, dict) and isinstance(counts.get("num_val"), int) and isinstance(counts.get("num_train"), int):
        n_val, n_all = counts["num_val"], counts["num_val"] + counts["num_train"]
        return "hold-out", (
            f"No test data: evaluated on the validation hold-out, {n_val} of the {n_all} images "
            f"({100 * n_val / max(n_all, 1):.0f} %) of {_e(data)}, held out of training (their ids in split.json); "
            "the best epoch was chosen on these images too, so the figures are optimistic"
        )
    return "validation", (
        f"No test data: evaluated on the validation data {_e(data)}; the best epoch was chosen on it too, so the "
        "figures are optimistic"
    )


def _versions() -> dict[str, str]:
    out = {"mlcl": "", "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}
    from mlcl._version import __version__

    out["mlcl"] = __version__
    for mod in ("torch", "timm", "matplotlib"):
        m = sys.modules.get(mod)
        if m is None and mod == "matplotlib":
            import matplotlib as m
        if m is not None:
            out[mod] = str(getattr(m, "__version__", ""))
    return out


def build_run_report(run_dir: str | os.PathLike[str]) -> str:
    """The HTML page of the run in ``run_dir`` (see :func:`write_run_report`)."""
    run = _resolve(Path(run_dir))
    root = run.stage
    metrics = _read_json(root / "metrics.json", "final metrics")
    try:
        log = [json.loads(line) for line in (root / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    except (OSError, ValueError) as e:
        raise DataError(f"{root / 'log.jsonl'}: cannot read the per-epoch log ({type(e).__name__})") from None
    s = load_scores(root / SCORES_FILE)
    names = s.class_names
    if list(metrics.get("per_class_AP", {})) != names:
        raise DataError(f"{root}: the classes of {SCORES_FILE} differ from metrics.json's")
    config_text = run.config.read_text(encoding="utf-8") if run.config.is_file() else ""
    threshold = 0.5
    try:
        import yaml

        threshold = float(((yaml.safe_load(config_text) or {}).get("run") or {}).get("threshold", 0.5))
    except Exception:  # noqa: BLE001 - an unreadable config.yaml only loses the threshold
        pass
    best_epoch = metrics.get("best_epoch")
    pos = s.targets == 1
    n_pos = pos.sum(0)
    observed = s.targets != -1
    pred = (s.scores >= threshold) & observed
    fp = (pred & (s.targets == 0)).sum(0)
    fn = (~pred & pos).sum(0)
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    cf1, of1, f1c = F.f1_vs_threshold(s.scores, s.targets, grid)
    best_thr = grid[np.argmax(f1c, axis=0)]
    ap = metrics["per_class_AP"]

    parts: list[str] = []
    title = f"mlcl run report: {run.root.resolve().name}"
    summary = "".join(
        f'<div>{k}<b id="{k}" data-value="{metrics[k]!r}">{100 * metrics[k]:.2f}</b></div>'
        for k in ("mAP", "CF1", "OF1", "CP", "CR", "OP", "OR")
        if k in metrics
    )
    wall = sum(float(r.get("time_s", 0.0)) for r in log)
    evaluated, where = _evaluated(run, metrics)
    parts.append(
        f"<h1>{_e(title)}</h1><p class='note' id='evaluated'>{where}; "
        f"{metrics.get('n_images', len(s.ids))} images, {len(names)} classes; best checkpoint: epoch "
        f"{_e(best_epoch)} ({_e(metrics.get('weights', 'model'))} weights, validation mAP "
        f"{100 * float(metrics.get('best_val_mAP', float('nan'))):.2f}); threshold {threshold:g}. Metrics in %.</p>"
        f'<div class="summary">{summary}</div>'
    )
    silent = [n for j, n in enumerate(names) if n_pos[j] > 0 and not pred[:, j].any()]
    # mlcl.metrics.unpredicted_classes's rule, on the prediction mask of the per-class table below (this page is
    # built without torch, so the torch function is not called here)
    if silent:
        parts.append(
            f"<p class='warn' id='unpredicted' data-classes='{_e(json.dumps(silent))}'>{len(silent)} of {len(names)} "
            f"classes get no positive prediction at the threshold {threshold:g}: {_classes(silent)}. CP, CR and "
            "CF1 count each as 0 whatever its AP; the per-class table gives each class's F1-optimal threshold.</p>"
        )
    parts.append("<h2>Learning curves</h2><div class='fig' id='fig-curves'>")
    parts.append(F.strip_ids(F.learning_curves(log, best_epoch), "curves") + "</div>")
    ap_list = [ap[n] for n in names]
    parts.append(
        "<h2>Per-class AP</h2><p class='note'>Sorted, best on top; in brackets each class's number of positives "
        "in the evaluated data.</p><div class='fig' id='fig-ap'>"
    )
    parts.append(F.strip_ids(F.per_class_ap(names, ap_list, n_pos.tolist(), evaluated), "ap") + "</div>")
    rows = []
    for j, n in enumerate(names):
        v = ap[n]
        rows.append(
            f'<tr class="class-row" data-class="{_e(n)}" data-ap="{"" if v is None else repr(v)}"><td>{_e(n)}</td>'
            f"<td>{'n/a' if v is None else f'{100 * v:.2f}'}</td><td>{int(n_pos[j])}</td><td>{int(fp[j])}</td>"
            f"<td>{int(fn[j])}</td><td>{best_thr[j]:.2f}</td><td>{100 * f1c[:, j].max():.1f}</td></tr>"
        )
    parts.append(
        "<details><summary>Per-class table (AP, positives, errors at the run's threshold, F1-optimal threshold)"
        "</summary><table id='per-class'><tr><th>class</th><th>AP %</th><th>positives</th><th>false positives</th>"
        "<th>false negatives</th><th>F1-optimal threshold</th><th>F1 there %</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )
    valid = [j for j, n in enumerate(names) if ap[n] is not None]
    ranked = sorted(valid, key=lambda j: -float(ap[names[j]]))
    chosen = ranked[:PR_CLASSES] + [j for j in ranked[-PR_CLASSES:] if j not in ranked[:PR_CLASSES]]
    curves = []
    obs_flat = observed.ravel()
    p, r = F.pr_curve(s.scores.ravel()[obs_flat], pos.ravel()[obs_flat])
    curves.append(("micro (all classes)", p, r))
    for j in chosen:
        m = observed[:, j]
        p, r = F.pr_curve(s.scores[m, j], pos[m, j])
        curves.append((f"{ellipsize(names[j])} (AP {100 * float(ap[names[j]]):.1f})", p, r))
    parts.append("<h2>Precision-recall</h2><p class='note'>The micro curve pools every (image, class) pair; then the "
                 f"{PR_CLASSES} best and worst classes by AP.</p><div class='fig' id='fig-pr'>")  # fmt: skip
    parts.append(F.strip_ids(F.pr_curves(curves), "pr") + "</div>")
    k = int(np.argmax(cf1))
    parts.append(
        "<h2>Threshold trade-off</h2><p class='note'>CF1 and OF1 when one global threshold is applied to every "
        f"class; best CF1 {100 * cf1[k]:.1f} at {grid[k]:.2f}, best OF1 {100 * of1.max():.1f} at "
        f"{grid[int(np.argmax(of1))]:.2f}. Each class's F1-optimal threshold is in the per-class table.</p>"
        "<div class='fig' id='fig-threshold'>"
    )
    parts.append(F.strip_ids(F.threshold_tradeoff(grid, cf1, of1, threshold), "thr") + "</div>")
    parts.append(_label_section(root, names))
    gallery, shown = _gallery(s, threshold)
    total_fp, total_fn = int(fp.sum()), int(fn.sum())
    parts.append(
        f"<h2>Errors</h2><p class='note'>At the threshold {threshold:g}: {total_fp} false positives and {total_fn} "
        "false negatives in all (per class in the table above). "
        + (
            f"The {shown} images with the most confident mistakes:</p>" + gallery
            if shown
            else "No thumbnails: the image files are not readable from here.</p>"
        )
    )
    versions = _versions()
    rows_v = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in versions.items())
    parts.append(
        f"<h2>Run</h2><table id='run-info'><tr><td>folder</td><td>{_e(root)}</td></tr><tr><td>device</td><td>"
        f"{_e(s.device or 'unknown')}</td></tr><tr><td>training wall-clock time</td><td>{wall:.1f} s over "
        f"{len(log)} epoch(s)</td></tr>{rows_v}</table><details><summary>Resolved configuration (config.yaml)"
        f"</summary><pre>{_e(config_text)}</pre></details>"
    )
    body = "\n".join(parts)
    return page(title, body, _CSS)


def _label_section(root: Path, names: list[str]) -> str:
    out = ["<h2>Training labels</h2>"]
    path = root / TRAIN_LABELS_FILE
    if not path.is_file():
        return out[0] + f"<p class='note'>No {TRAIN_LABELS_FILE} in the run folder.</p>"
    tl = load_train_labels(path)
    if tl.class_names != names:
        raise DataError(f"{path}: its classes differ from {SCORES_FILE}'s")
    hidden = None
    if (root / "missing.json").is_file():
        miss = _read_json(root / "missing.json", "missing-label summary")
        before, kept = miss.get("positives_per_class_before"), miss.get("positives_per_class_kept")
        if isinstance(before, list) and isinstance(kept, list) and len(before) == len(kept) == len(names):
            hidden = np.asarray(before) - np.asarray(kept)
    note = "observed positives" + (", positives hidden by the missing-label protocol" if hidden is not None else "")
    out.append(f"<p class='note'>Per class: {note}; unknown (-1) entries in grey.</p><div class='fig' id='fig-train'>")
    out.append(F.strip_ids(F.train_counts(names, tl.positives, hidden, tl.unknown), "train") + "</div>")
    out.append(
        "<p class='note'>Co-occurrence of the training positives: row class, and the share of its images "
        "that also hold the column class, in % (written in the cells in small label sets; each class's count of "
        "positives is in the figure above).</p><div class='fig' id='fig-cooc'>"
    )
    out.append(F.strip_ids(F.cooccurrence(names, tl.cooccurrence), "cooc") + "</div>")
    return "".join(out)


def write_run_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the run's report: one self-contained HTML file (default ``RUN_DIR/report.html``), atomically.

    Reads ``metrics.json``, ``log.jsonl``, ``test_scores.npz``, ``config.yaml`` and, when present,
    ``train_labels.npz`` and ``missing.json`` (a MulCon run: its ``stage2``); the model is not run.

    Raises:
        DataError: The folder is missing, empty, or lacks an input (the message names the folder and the file).
        OutputError: ``out`` cannot be written.
    """
    page = build_run_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, page)
    return path
