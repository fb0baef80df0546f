"""The run report in a real browser: headless Chromium through Selenium (never skipped: a missing tool fails)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from tests.helpers.browser import chromium_driver
from tests.helpers.paths import MIML_DIR


def _driver():  # noqa: ANN202
    return chromium_driver(2000)


def _train(csv: Path, out: Path) -> Path:
    cfg = load_config(
        None,
        [
            "train.device=cpu", "data.num_workers=0", "run.progress=false", "run.tensorboard=false",
            "model.backbone=resnet10t", f"data.train={csv}", f"run.out={out}", "train.epochs=2",
            "train.batch_size=16", "data.image_size=32", "data.val_fraction=0.25",
        ],
    )  # fmt: skip
    return fit(cfg).run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the README's MIML recipe, small: 64 MIML photos listed by deep relative paths, no test data."""
    if not MIML_DIR.is_dir():
        pytest.fail(f"MIML photos not found at {MIML_DIR} (set MLCL_SHARED_DIR)")
    root = tmp_path_factory.mktemp("report")
    csv = root / "runs" / "miml_split" / "split" / "train.csv"  # as deep as benchmarks/miml_split.py's output
    csv.parent.mkdir(parents=True)
    lines = (MIML_DIR / "labels.csv").read_text().splitlines()
    rows = [line.split(",", 1) for line in lines[1::23]][:64]  # spread over the file: every class present
    images = [os.path.relpath(MIML_DIR / "images" / name, csv.parent) for name, _ in rows]
    csv.write_text(lines[0] + "\n" + "".join(f"{p},{labels}\n" for p, (_, labels) in zip(images, rows, strict=True)))
    return _train(csv, root / "run")


def check_page(page: Path, screenshot: Path) -> object:
    """Open ``page``: no console error, every image decoded, every SVG drawn; a screenshot. Returns the driver."""
    driver = _driver()
    try:
        driver.get(page.resolve().as_uri())
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == [], severe
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0]);"
        )
        assert all(ok for _, ok in images), [alt for alt, ok in images if not ok]
        svgs = driver.execute_script(
            "return Array.from(document.querySelectorAll('body > div svg, .fig > svg')).map(s => {"
            "const r = s.getBoundingClientRect(); return [s.parentElement.id, r.width, r.height];});"
        )
        assert svgs and all(w > 0 and h > 0 for _, w, h in svgs), svgs
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 0
        return driver
    except BaseException:
        driver.quit()
        raise


#: JavaScript: what overlaps or overflows on the page (each a short description; empty when the layout holds).
LAYOUT_PROBLEMS = """
const out = [];
const doc = document.documentElement;
if (doc.scrollWidth > window.innerWidth) out.push('page wider than the window: ' + doc.scrollWidth);
const boxes = Array.from(document.querySelectorAll('.gallery figure'));
const rect = e => e.getBoundingClientRect();
const meets = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5
  && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
boxes.forEach((f, i) => boxes.slice(i + 1).forEach((g, j) => {
  if (meets(rect(f), rect(g))) out.push('gallery figures ' + i + ' and ' + (i + j + 1) + ' overlap');
}));
const over = e => e.scrollWidth > e.clientWidth + 1;
document.querySelectorAll('.gallery figcaption, .gallery figcaption *, .warn, .note, td, th, h1').forEach(e => {
  if (e.clientWidth > 0 && over(e)) out.push(e.tagName + ' text overflows its box: ' + e.textContent.slice(0, 60));
});
boxes.forEach((f, i) => {
  const c = rect(f.querySelector('figcaption')), b = rect(f);
  if (c.left < b.left - 0.5 || c.right > b.right + 0.5) out.push('caption ' + i + ' leaves its figure');
});
document.querySelectorAll('.fig > svg').forEach(s => {
  const natural = parseFloat(s.getAttribute('width')) * 96 / 72;  // pt to CSS px
  const shown = rect(s).width;
  if (shown < 0.98 * natural) out.push(s.parentElement.id + ' shrunk to ' + Math.round(100 * shown / natural) + ' %');
});
return out;
"""


def test_run_report_in_chromium(run_dir: Path) -> None:
    page = run_dir / "report.html"
    assert page.is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    driver = check_page(page, run_dir / "report.png")
    try:
        figures = driver.execute_script("return Array.from(document.querySelectorAll('.fig')).map(d => d.id);")
        assert {"fig-curves", "fig-ap", "fig-pr", "fig-threshold", "fig-train", "fig-cooc"} <= set(figures)
        for key in ("mAP", "CF1", "OF1"):
            value = driver.find_element("id", key).get_attribute("data-value")
            assert float(value) == metrics[key], key
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('tr.class-row')).map(r => [r.dataset.class, r.dataset.ap]);"
        )
        assert [name for name, _ in rows] == list(metrics["per_class_AP"])
        for name, ap in rows:
            expected = metrics["per_class_AP"][name]
            assert (ap == "" and expected is None) or math.isclose(float(ap), expected, rel_tol=0, abs_tol=0), name
        n_thumbs = driver.execute_script("return document.querySelectorAll('.gallery img').length;")
        assert n_thumbs > 0  # the photos are files: the mistakes have thumbnails
        assert driver.execute_script(LAYOUT_PROBLEMS) == []
        # the captions name the photos by their file name, the deep relative path on hover
        captions = driver.execute_script(
            "return Array.from(document.querySelectorAll('.gallery figure')).map(f => "
            "[f.title, f.querySelector('figcaption b').textContent]);"
        )
        for full, shown in captions:
            assert shown == Path(full).name and full.count("../") >= 4, (full, shown)
        # no test data: the page says it evaluated the hold-out of the training file, as split.json records it
        split = json.loads((run_dir / "split.json").read_text())
        header = driver.find_element("id", "evaluated").text
        n_all = split["num_train"] + split["num_val"]
        assert f"validation hold-out, {split['num_val']} of the {n_all} images (25 %) of" in header, header
        assert metrics["split"] == "val" and metrics["data"] in header
    finally:
        driver.quit()


def test_long_names_and_deep_paths_in_chromium(tmp_path: Path) -> None:
    """200-character class names and deep relative image paths: nothing overlaps, overflows or shrinks."""
    from PIL import Image

    from mlcl.report import write_run_report
    from mlcl.report.scores import load_scores, save_scores
    from tests.test_report import _fake_run, long_names, rename_classes

    run = _fake_run(tmp_path / "runs" / "deep" / "er" / "run", 6, n=60)
    rename_classes(run, long_names(6))
    s = load_scores(run / "test_scores.npz")
    folder = tmp_path / ("very_long_folder_name_" * 4) / "data" / "images"
    folder.mkdir(parents=True)
    ids = []
    for i in range(len(s.ids)):
        name = f"{i:04d}_{'photo' * 12}.jpg"
        Image.new("RGB", (12, 9), (4 * i, 120, 200)).save(folder / name)
        ids.append(os.path.relpath(folder / name, run))
    scores = s.scores.copy()
    scores[:, 3] *= 0.45  # one class never predicted: the warning box names a 200-character class
    save_scores(run / "test_scores.npz", scores, s.targets, ids, s.class_names, files=[str(run / i) for i in ids])
    page = write_run_report(run)
    driver = check_page(page, tmp_path / "long.png")
    try:
        assert driver.execute_script("return document.querySelectorAll('.gallery figure').length;") == 12
        assert driver.find_element("id", "unpredicted").is_displayed()
        assert driver.execute_script(LAYOUT_PROBLEMS) == []
        # the per-class AP labels stay legible: 8 pt text drawn at its size (about 10.7 CSS px), not scaled down
        heights = driver.execute_script(
            "return Array.from(document.querySelectorAll('#fig-ap text')).filter(t => t.textContent.includes('…'))"
            ".map(t => t.getBoundingClientRect().height);"
        )
        assert len(heights) == 6 and min(heights) >= 9, heights
        full = driver.execute_script(
            "return Array.from(document.querySelectorAll('tr.class-row')).map(r => r.dataset.class);"
        )
        assert full == long_names(6)
    finally:
        driver.quit()


def test_saved_scores_reproduce_metrics_json(run_dir: Path) -> None:
    """test_scores.npz recomputed with scikit-learn gives metrics.json's per-class AP and mAP."""
    import numpy as np
    from sklearn.metrics import average_precision_score

    from mlcl.report.scores import load_scores, load_train_labels

    metrics = json.loads((run_dir / "metrics.json").read_text())
    s = load_scores(run_dir / "test_scores.npz")
    assert s.class_names == list(metrics["per_class_AP"]) and len(s.ids) == metrics["n_images"]
    ap = [average_precision_score(s.targets[:, j] == 1, s.scores[:, j]) for j in range(len(s.class_names))]
    assert np.allclose(ap, list(metrics["per_class_AP"].values()), atol=1e-6)
    assert abs(float(np.mean(ap)) - metrics["mAP"]) < 1e-6
    tl = load_train_labels(run_dir / "train_labels.npz")
    assert (np.diag(tl.cooccurrence) == tl.positives).all() and tl.positives.sum() > 0
