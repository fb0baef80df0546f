"""``mlcl report`` on run folders made here (no training): the page's numbers, sizes and the one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlcl.cli import main
from mlcl.errors import DataError
from mlcl.report import write_run_report
from mlcl.report.scores import load_scores, save_scores, save_train_labels, train_label_counts


def _fake_run(root: Path, c: int, n: int = 200, seed: int = 0) -> Path:
    """A finished run folder with ``c`` classes: scores, targets, metrics.json (AP from scikit-learn)."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.2).astype(np.int8)
    targets[0] = 1
    scores = np.clip(0.35 * targets + rng.random((n, c)) * 0.65, 0, 1).astype(np.float32)
    names = [f"class_{j:02d}" for j in range(c)]
    root.mkdir(parents=True)
    save_scores(root / "test_scores.npz", scores, targets, [f"img{i}.jpg" for i in range(n)], names)
    train = (rng.random((3 * n, c)) < 0.3).astype(np.int8)
    save_train_labels(root / "train_labels.npz", train, names)
    ap = {name: float(average_precision_score(targets[:, j], scores[:, j])) for j, name in enumerate(names)}
    metrics = {"mAP": float(np.mean(list(ap.values()))), "CF1": 0.5, "OF1": 0.6, "per_class_AP": ap}
    metrics |= {"n_images": n, "split": "test", "best_epoch": 2, "best_val_mAP": 0.5}
    (root / "metrics.json").write_text(json.dumps(metrics))
    log = [
        {"epoch": e, "step": 10 * e, "lr": 1e-3 / e, "train": {"loss": 1 / e, "base": 0.8 / e},
         "val": {"model": {"mAP": 0.4 + e / 10, "CF1": 0.3, "OF1": 0.4}, "ema": {"mAP": 0.5, "CF1": 0.3, "OF1": 0.4}},
         "time_s": 1.5}
        for e in (1, 2, 3)
    ]  # fmt: skip
    (root / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (root / "config.yaml").write_text("run:\n  threshold: 0.5\n")
    return root


def _svg_height(page: str, fig: str) -> float:
    block = page.split(f"id='{fig}'>", 1)[1]
    return float(re.search(r'<svg[^>]*height="([\d.]+)pt"', block).group(1))


@pytest.mark.parametrize("c", [5, 80])
def test_page_numbers_equal_metrics_json(tmp_path: Path, c: int) -> None:
    run = _fake_run(tmp_path / "run", c)
    path = write_run_report(run)
    page = path.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert float(re.search(r'id="mAP" data-value="([^"]+)"', page).group(1)) == metrics["mAP"]
    rows = re.findall(r'data-class="([^"]+)" data-ap="([^"]*)"', page)
    assert [(n, float(v)) for n, v in rows] == list(metrics["per_class_AP"].items())
    # nothing fetched: no script, no external source, link or style (XML namespaces are names, not fetches)
    assert "<script" not in page and "@import" not in page and "url(http" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_page_names_the_classes_never_predicted(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 5)
    assert "id='unpredicted'" not in write_run_report(run).read_text()  # every class has scores above 0.5
    s = load_scores(run / "test_scores.npz")
    scores = s.scores.copy()
    scores[:, [1, 3]] *= 0.49  # classes 1 and 3: every score below the threshold, their ranking (AP) unchanged
    save_scores(run / "test_scores.npz", scores, s.targets, s.ids, s.class_names)
    page = write_run_report(run).read_text()
    listed = re.search(r"id='unpredicted' data-classes='([^']*)'", page).group(1)
    assert json.loads(listed.replace("&quot;", '"')) == ["class_01", "class_03"]
    assert "2 of 5 classes get no positive prediction at the threshold 0.5" in page


def test_bar_chart_grows_with_the_classes(tmp_path: Path) -> None:
    small = write_run_report(_fake_run(tmp_path / "a", 5)).read_text()
    large = write_run_report(_fake_run(tmp_path / "b", 80)).read_text()
    assert _svg_height(large, "fig-ap") > 8 * _svg_height(small, "fig-ap")


def test_scores_file_round_trip_and_counts(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 6)
    s = load_scores(run / "test_scores.npz")
    assert s.scores.dtype == np.float32 and s.targets.dtype == np.int8 and len(s.ids) == s.scores.shape[0]
    t = np.array([[1, 0, -1], [1, 1, 0]])
    counts = train_label_counts(t)
    assert counts["positives"].tolist() == [2, 1, 0] and counts["unknown"].tolist() == [0, 0, 1]
    assert counts["cooccurrence"].tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("absent", "no such run folder"),
        ("empty", "the folder is empty"),
        ("no-metrics", "no metrics.json"),
        ("no-scores", "no test_scores.npz"),
    ],
)
def test_bad_folders_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, expected: str
) -> None:
    run = tmp_path / "run"
    if setup == "empty":
        run.mkdir()
    elif setup != "absent":
        _fake_run(run, 5)
        (run / ("metrics.json" if setup == "no-metrics" else "test_scores.npz")).unlink()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run) in err and expected in err, err
    assert not (run / "report.html").exists()
    with pytest.raises(DataError):
        write_run_report(run)


def test_cli_report_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path / "run", 5)
    assert main(["report", str(run), "--out", str(tmp_path / "x" / "r.html")]) == 0
    assert (tmp_path / "x" / "r.html").is_file() and "report written to" in capsys.readouterr().out


# --- long names, deep paths, what the page says it evaluated (issue 21, items 5 and 6) ---------------------------

LONG = 200


def long_names(c: int) -> list[str]:
    """``c`` class names of 200 characters that differ only in their first and last characters, one with spaces."""
    names = [f"c{j}_" + "x" * (LONG - 5) + f"_{j}" for j in range(c)]
    names[1] = ("word " * LONG)[: LONG - 2] + "_1"
    assert all(len(n) == LONG for n in names) and len(set(names)) == c
    return names


def rename_classes(run: Path, names: list[str]) -> None:
    """Give the fake run's classes ``names`` in every file that holds them."""
    s = load_scores(run / "test_scores.npz")
    save_scores(run / "test_scores.npz", s.scores, s.targets, s.ids, names, files=s.files)
    rng = np.random.default_rng(1)
    save_train_labels(run / "train_labels.npz", (rng.random((300, len(names))) < 0.3).astype(np.int8), names)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["per_class_AP"] = dict(zip(names, metrics["per_class_AP"].values(), strict=True))
    (run / "metrics.json").write_text(json.dumps(metrics))


def _svg(page: str, fig: str) -> str:
    block = page.split(f"id='{fig}'>", 1)[1]
    return block[: block.index("</svg>") + 6]


def _texts(svg: str) -> list[str]:
    """The text of the SVG's <text> elements (text stays text: svg.fonttype none), unescaped."""
    import html

    return [
        html.unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S)
    ]


def _svg_width_pt(svg: str) -> float:
    return float(re.search(r'<svg[^>]*width="([\d.]+)pt"', svg).group(1))


def test_long_class_names_shortened_in_figures_full_in_table_no_warning(tmp_path: Path) -> None:
    """200-character names: figures show at most 40 characters and keep their size; the table the full names."""
    import warnings

    run = _fake_run(tmp_path / "run", 6)
    names = long_names(6)
    rename_classes(run, names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Tight layout not applied" among others
        page = write_run_report(run).read_text()
    rows = re.findall(r'data-class="([^"]+)" data-ap=', page)
    assert [r.replace("&quot;", '"') for r in rows] == names  # the table keeps the full names
    for fig in ("fig-ap", "fig-pr", "fig-train", "fig-cooc"):
        svg = _svg(page, fig)
        labels = [t for t in _texts(svg) if t.startswith(("c0_", "c5_", "word"))]
        assert labels, fig
        assert max(len(t) for t in labels) <= 40 + len(" (AP 100.0)"), (fig, labels)
        assert all("…" in t for t in labels), (fig, labels)
        # the figure is no wider than the page's 1100 px column (96 px per inch, 72 pt per inch): not shrunk
        assert _svg_width_pt(svg) <= 1100 * 72 / 96, fig
    ap_labels = [t for t in _texts(_svg(page, "fig-ap")) if t.endswith(")") and "…" in t]
    assert len(set(ap_labels)) == 6  # names that differ only at their ends stay apart
    # the warning names its class shortened, the full name on hover and in data-classes
    assert "id='unpredicted'" not in page or "x" * 60 not in page.split("id='unpredicted'", 1)[1].split("</p>")[0]


def test_cli_report_prints_no_warning(tmp_path: Path) -> None:
    """``mlcl report`` on 200-character names: stdout says where the page is, stderr is empty."""
    import subprocess
    import sys

    run = _fake_run(tmp_path / "run", 5)
    rename_classes(run, long_names(5))
    done = subprocess.run(
        [sys.executable, "-m", "mlcl", "report", str(run)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and "report written to" in done.stdout, done.stderr
    assert done.stderr == "", done.stderr


def _holdout_run(root: Path) -> Path:
    run = _fake_run(root, 5)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "split": "val", "data": "../data/train.csv"}))
    ids = [f"img{i}.jpg" for i in range(1000)]
    split = {"format": "mlcl-split", "version": 1, "num_train": 900, "num_val": 100, "train": ids[100:]}
    (run / "split.json").write_text(json.dumps({**split, "val": ids[:100]}))
    return run


def test_holdout_run_says_what_it_evaluated(tmp_path: Path) -> None:
    """Without test data: the 10 % hold-out of the training file (split.json), named in the text and the axis."""
    page = write_run_report(_holdout_run(tmp_path / "run")).read_text()
    header = re.search(r"<p class='note' id='evaluated'>(.*?)</p>", page, re.S).group(1)
    assert "validation hold-out, 100 of the 1000 images (10 %) of ../data/train.csv" in header, header
    assert "split.json" in header and "val data:" not in page
    assert "class (hold-out positives)" in _texts(_svg(page, "fig-ap"))
    assert not any("test positives" in t for t in _texts(_svg(page, "fig-ap")))
    # a test set says so; validation data given without a hold-out is named as such
    test_page = write_run_report(_fake_run(tmp_path / "test-run", 5)).read_text()
    assert "class (test positives)" in _texts(_svg(test_page, "fig-ap")) and "Evaluated on the test data" in test_page
    run = _holdout_run(tmp_path / "val-run")
    (run / "split.json").unlink()
    page = write_run_report(run).read_text()
    assert "class (validation positives)" in _texts(_svg(page, "fig-ap"))
    assert "evaluated on the validation data ../data/train.csv" in page


def _rewrite_log(run: Path, train: dict[str, list[float]]) -> None:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r["train"] = {k: v[i] for k, v in train.items()}
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_one_loss_term_is_one_curve(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 5)
    _rewrite_log(run, {"loss": [0.9, 0.5, 0.3], "base": [0.9, 0.5, 0.3]})
    svg = _svg(write_run_report(run).read_text(), "fig-curves")
    assert 'id="curves-train-loss"' in svg and "train-base" not in svg
    assert "base" not in _texts(svg) and "loss" in _texts(svg)
    _rewrite_log(run, {"loss": [1.0, 0.6, 0.4], "base": [0.9, 0.5, 0.3], "clml": [0.1, 0.1, 0.1]})
    svg = _svg(write_run_report(run).read_text(), "fig-curves")
    for term in ("loss", "base", "clml"):
        assert f'id="curves-train-{term}"' in svg, term
    assert {"loss (total)", "base", "clml"} <= set(_texts(svg))


def _line_style(svg: str, gid: str) -> tuple[str, str, str]:
    """(marker path, marker fill, dash array) of the line whose SVG group is ``gid``."""
    group = svg.split(f'<g id="{gid}">', 1)[1].split("</g>", 1)[0]
    marker = re.search(r'xlink:href="#([^"]+)"', group).group(1)
    shape = re.search(rf'<path id="{re.escape(marker)}"\s+d="([^"]+)"', svg).group(1)
    fill = re.search(r'<g clip-path="[^"]*">\s*<use[^>]*style="[^"]*fill: ?([^;"]+)', group)
    fill = fill or re.search(r'<g[^>]*style="[^"]*fill: ?([^;"]+)', group)
    dash = re.search(r"stroke-dasharray: ?([^;\"]+)", group)
    return shape, fill.group(1) if fill else "", dash.group(1) if dash else ""


def test_validation_tells_model_from_ema_weights(tmp_path: Path) -> None:
    """Model and EMA curves of one metric differ in marker shape and fill, not only in the dash."""
    svg = _svg(write_run_report(_fake_run(tmp_path / "run", 5)).read_text(), "fig-curves")
    for m in ("mAP", "CF1", "OF1"):
        model, ema = _line_style(svg, f"curves-val-{m}-model"), _line_style(svg, f"curves-val-{m}-ema")
        assert model[0] != ema[0], m  # circle vs square
        assert model[1] != ema[1] and ema[1] in ("#ffffff", "white"), (m, model, ema)  # filled vs open
        assert model[2] == "" and ema[2] != "", m


def test_cooccurrence_cells_in_the_colour_bar_unit(tmp_path: Path) -> None:
    """The cells write P(column | row) in %, as the colour bar, recomputed here from the training labels."""
    from mlcl.report.scores import load_train_labels

    run = _fake_run(tmp_path / "run", 4)
    svg = _svg(write_run_report(run).read_text(), "fig-cooc")
    t = load_train_labels(run / "train_labels.npz")
    for i in range(4):
        for j in range(4):
            cell = svg.split(f'<g id="cooc-cell-{i}-{j}">', 1)[1].split("</g>", 1)[0]
            expected = round(100 * float(t.cooccurrence[i, j]) / float(t.cooccurrence[i, i]))
            assert _texts(cell) == [str(expected)], (i, j)
    assert "% of the row class's images" in _texts(svg)


def test_gallery_names_images_by_their_file_name(tmp_path: Path) -> None:
    """Thumbnails of deep relative paths: the caption shows the file name (parent folder where two share it)."""
    import os

    from PIL import Image

    run = _fake_run(tmp_path / "a" / "b" / "c" / "run", 5, n=40)
    deep = tmp_path / "data" / "photos" / "images"
    files = []
    for i in range(40):
        folder = deep / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 6, 0, 0)).save(folder / f"{i // 2}.png")  # each name twice: cats/3, dogs/3
        files.append(os.path.relpath(folder / f"{i // 2}.png", run))  # ../../../../data/photos/images/...
    s = load_scores(run / "test_scores.npz")
    save_scores(run / "test_scores.npz", s.scores, s.targets, files, s.class_names, files=[str(run / f) for f in files])
    page = write_run_report(run).read_text()
    captions = re.findall(r'<figure title="([^"]+)"[^>]*><img[^>]*><figcaption><b>([^<]+)</b>', page)
    assert len(captions) == 12
    base = [Path(full).name for full, _ in captions]
    assert len(set(base)) < 12  # the mistakes shown include images of one name in both folders
    for full, shown in captions:
        parent, name = Path(full).parent.name, Path(full).name
        expected = f"{parent}/{name}" if base.count(name) > 1 else name  # the file name, unless two shown share it
        assert shown == expected and "../" in full, (full, shown)
