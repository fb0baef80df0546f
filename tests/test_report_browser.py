"""The run report in a real browser: headless Chromium through Selenium (never skipped: a missing tool fails)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from mlcl.engine.config import load_config
from mlcl.engine.trainer import fit
from tests.helpers.synthetic import make_shapes_csv

CHROMEDRIVER = "/usr/bin/chromedriver"


def _driver():  # noqa: ANN202
    missing = [t for t in ("chromium", "chromedriver") if shutil.which(t) is None]
    if missing or not Path(CHROMEDRIVER).is_file():
        pytest.fail(
            f"the browser test needs {', '.join(missing) or CHROMEDRIVER}: install them with "
            "`apt-get install chromium chromium-driver` (.ci/run does)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser test needs selenium: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or ""
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    csv = make_shapes_csv(root / "data", n=48)
    cfg = load_config(
        None,
        [
            "train.device=cpu", "data.num_workers=0", "run.progress=false", "run.tensorboard=false",
            "model.backbone=resnet10t", f"data.train={csv}", f"run.out={root / 'run'}", "train.epochs=2",
            "train.batch_size=16", "data.image_size=32", "data.val_fraction=0.25",
        ],
    )  # fmt: skip
    return fit(cfg).run_dir


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
        assert n_thumbs > 0  # the shapes images are files: the mistakes have thumbnails
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
