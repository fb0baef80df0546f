"""``mlcl compare`` on run folders made here (no training): grouping, paired deltas, one-line errors, the page."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import ttest_rel

from mlcl.cli import main
from mlcl.report.compare import CompareError, compare_runs, write_compare

CLASSES = ["cat", "dog", "car", "tree"]


def _fake_run(root: Path, loss: str, seed: int, classes: list[str] = CLASSES, lr: float = 1e-3) -> Path:
    """A finished run folder: config.yaml, metrics.json (random but seeded numbers), log.jsonl."""
    rng = np.random.default_rng(zlib.crc32(f"{loss}/{seed}/{lr}".encode()))
    ap = {c: float(rng.uniform(0.4, 0.95)) for c in classes}
    metrics = {"mAP": float(np.mean(list(ap.values()))), "CF1": float(rng.uniform(0.3, 0.8))}
    metrics |= {"OF1": float(rng.uniform(0.3, 0.8)), "per_class_AP": ap, "best_epoch": 3}
    root.mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "run": {"out": str(root), "overwrite": False, "progress": False, "tensorboard": False, "threshold": 0.5},
        "train": {"seed": seed, "device": "cpu", "lr": lr, "epochs": 3, "stop_after": None},
        "data": {"num_workers": seed, "missing_seed": None, "train": "builtin"},
        "loss": {"name": loss},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    log = [{"epoch": e, "val": {"model": {"mAP": float(rng.uniform(0.3, 0.9))}}} for e in (1, 2, 3)]
    (root / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return root


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """2 groups x 3 seeds; seed 2 missing from the bce+clml group."""
    out = [_fake_run(tmp_path / f"bce-{s}", "bce", s) for s in (0, 1, 2)]
    out += [_fake_run(tmp_path / f"clml-{s}", "bce+clml", s) for s in (0, 1, 3)]
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _expected(runs: list[Path]) -> dict[str, tuple[float, float, int, float]]:
    """Independent NumPy / SciPy: per metric, the paired delta (mean, std, pairs, p) of clml minus bce."""
    base = {int(p.name.split("-")[1]): _metrics(p) for p in runs if p.name.startswith("bce-")}
    other = {int(p.name.split("-")[1]): _metrics(p) for p in runs if p.name.startswith("clml-")}
    common = sorted(set(base) & set(other))
    out = {}
    for m in ("mAP", "CF1", "OF1"):
        x = np.array([other[s][m] for s in common])
        y = np.array([base[s][m] for s in common])
        out[m] = (float(np.mean(x - y)), float(np.std(x - y, ddof=1)), len(common), float(ttest_rel(x, y).pvalue))
    return out


def test_groups_means_and_paired_deltas(runs: list[Path]) -> None:
    c = compare_runs(runs)
    assert [g.name for g in c.groups] == ["loss.name=bce", "loss.name=bce+clml"]
    assert c.baseline == 0 and [len(g.runs) for g in c.groups] == [3, 3]
    for g, prefix in zip(c.groups, ("bce-", "clml-"), strict=True):
        ms = [_metrics(p) for p in runs if p.name.startswith(prefix)]
        for m in ("mAP", "CF1", "OF1"):
            v = np.array([x[m] for x in ms])
            assert math.isclose(g.mean[m], float(np.mean(v)), abs_tol=1e-12)
            assert math.isclose(g.std[m], float(np.std(v, ddof=1)), abs_tol=1e-12)
        ap = np.array([[x["per_class_AP"][k] for k in CLASSES] for x in ms]).mean(0)
        assert np.allclose(g.ap_mean, ap, atol=1e-12)
    expected = _expected(runs)
    other = c.groups[1]
    for m, (mean, std, pairs, p) in expected.items():
        d = other.deltas[m]
        assert d.pairs == pairs == 2
        assert math.isclose(d.mean, mean, abs_tol=1e-12) and math.isclose(d.std, std, abs_tol=1e-12)
        assert math.isclose(d.p, p, rel_tol=1e-9)
    base = {s: _metrics(runs[s]) for s in (0, 1)}
    clml = {s: _metrics(runs[3 + s]) for s in (0, 1)}
    ap_delta = np.mean(
        [[clml[s]["per_class_AP"][k] - base[s]["per_class_AP"][k] for k in CLASSES] for s in (0, 1)], axis=0
    )
    assert other.ap_delta is not None and np.allclose(other.ap_delta, ap_delta, atol=1e-12)


def test_baseline_by_group_name_and_by_run_folder(runs: list[Path]) -> None:
    by_name = compare_runs(runs, baseline="loss.name=bce+clml")
    by_run = compare_runs(runs, baseline=str(runs[4]))
    for c in (by_name, by_run):
        assert c.groups[c.baseline].name == "loss.name=bce+clml"
        d = c.groups[0].deltas["mAP"]
        assert math.isclose(d.mean, -_expected(runs)["mAP"][0], abs_tol=1e-12)
    with pytest.raises(CompareError, match="neither a run folder nor a group"):
        compare_runs(runs, baseline="loss.name=nope")


def test_group_by_key(tmp_path: Path, runs: list[Path]) -> None:
    other_lr = [_fake_run(tmp_path / f"lr-{s}", "bce", s, lr=0.1) for s in (0, 1)]
    assert len(compare_runs(runs + other_lr).groups) == 3  # lr differs: its own group
    names = [g.name for g in compare_runs(runs + other_lr).groups]
    assert names[2] == "loss.name=bce,train.lr=0.1"
    c = compare_runs(runs[:3] + other_lr, group_by="train.lr")
    assert [g.name for g in c.groups] == ["train.lr=0.001", "train.lr=0.1"]
    assert c.groups[1].deltas["mAP"].pairs == 2


def test_cli_prints_markdown_and_writes_page(
    tmp_path: Path, runs: list[Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compare", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| group |") and "loss.name=bce+clml" in out and "comparison written to" in out
    page = (tmp_path / "compare.html").read_text()
    assert "<script" not in page and 'data-delta="' in page


def _bad(tmp_path: Path, runs: list[Path], setup: str) -> tuple[list[Path], list[str]]:
    if setup == "no-metrics":
        (runs[1] / "metrics.json").unlink()
        return runs, [str(runs[1]), "no metrics.json"]
    if setup == "no-config":
        (runs[2] / "config.yaml").unlink()
        return runs, [str(runs[2]), "no config.yaml"]
    odd = _fake_run(tmp_path / "odd", "bce", 5, classes=["cat", "dog", "car", "bus"])
    return [*runs, odd], [str(runs[0]), str(odd), "different class lists"]


@pytest.mark.parametrize("setup", ["no-metrics", "no-config", "classes"])
def test_errors_are_one_line(tmp_path: Path, runs: list[Path], capsys: pytest.CaptureFixture[str], setup: str) -> None:
    dirs, expected = _bad(tmp_path, runs, setup)
    out = tmp_path / "c.html"
    with pytest.raises(SystemExit) as exc:
        main(["compare", *map(str, dirs), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(e in err for e in expected), err
    assert not out.exists()


def test_page_in_chromium(tmp_path: Path, runs: list[Path]) -> None:
    from tests.test_report_browser import check_page

    page, _ = write_compare(runs, tmp_path / "compare.html")
    expected = _expected(runs)
    driver = check_page(page, tmp_path / "compare.png")
    try:
        figures = driver.execute_script("return Array.from(document.querySelectorAll('.fig')).map(d => d.id);")
        assert {"fig-ap-delta", "fig-curves"} <= set(figures)
        cells = driver.execute_script(
            "return Array.from(document.querySelectorAll('td.delta')).map(t => [t.dataset.group, t.dataset.metric,"
            " t.dataset.delta, t.dataset.deltaStd, t.dataset.pairs, t.dataset.p]);"
        )
        assert sorted(c[1] for c in cells) == ["CF1", "OF1", "mAP"]
        for group, metric, delta, std, pairs, p in cells:
            mean_e, std_e, pairs_e, p_e = expected[metric]
            assert group == "loss.name=bce+clml" and int(pairs) == pairs_e
            assert math.isclose(float(delta), mean_e, abs_tol=1e-12) and math.isclose(float(std), std_e, abs_tol=1e-12)
            assert math.isclose(float(p), p_e, rel_tol=1e-9)
        means = driver.execute_script(
            "return Array.from(document.querySelectorAll('td.metric')).map(t => [t.dataset.group, t.dataset.metric,"
            " t.dataset.mean]);"
        )
        assert len(means) == 6
    finally:
        driver.quit()


def test_mulcon_stage2_and_cli_group_by(tmp_path: Path, runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    mulcon = runs[5]  # a MulCon run keeps its final metrics, log and config in stage2/
    (mulcon / "stage2").mkdir()
    for name in ("metrics.json", "log.jsonl", "config.yaml"):
        (mulcon / name).rename(mulcon / "stage2" / name)
    out = tmp_path / "x" / "c.html"
    assert main(["compare", *map(str, runs), "--group-by", "loss.name", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| loss.name=bce+clml | 3 | 0,1,3 |" in printed and out.is_file()
