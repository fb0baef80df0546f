"""``mlcl compare`` on run folders made here (no training): grouping, paired deltas, one-line errors, the page."""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import ttest_rel

from mlcl.cli import main
from mlcl.report.compare import CompareError, build_compare_page, compare_runs, to_markdown, write_compare

CLASSES = ["cat", "dog", "car", "tree"]


def _fake_run(
    root: Path, loss: str, seed: int, classes: list[str] = CLASSES, lr: float = 1e-3, missing: str = "none"
) -> Path:
    """A finished run folder: config.yaml, metrics.json (random but seeded numbers), log.jsonl."""
    rng = np.random.default_rng(zlib.crc32(f"{loss}/{seed}/{lr}{'' if missing == 'none' else missing}".encode()))
    ap = {c: float(rng.uniform(0.4, 0.95)) for c in classes}
    metrics = {"mAP": float(np.mean(list(ap.values()))), "CF1": float(rng.uniform(0.3, 0.8))}
    metrics |= {"OF1": float(rng.uniform(0.3, 0.8)), "per_class_AP": ap, "best_epoch": 3}
    root.mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "run": {"out": str(root), "overwrite": False, "progress": False, "tensorboard": False, "threshold": 0.5},
        "train": {"seed": seed, "device": "cpu", "lr": lr, "epochs": 3, "stop_after": None},
        "data": {"num_workers": seed, "missing_seed": None, "train": "builtin", "missing": missing},
        "loss": {"name": loss},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    log = [{"epoch": e, "val": {"model": {"mAP": float(rng.uniform(0.3, 0.9))}}, "time_s": 2.0 * e} for e in (1, 2, 3)]
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


def _paired(x: list[dict], y: list[dict], m: str) -> tuple[float, float, float]:
    a, b = np.array([r[m] for r in x]), np.array([r[m] for r in y])
    return float(np.mean(a - b)), float(np.std(a - b, ddof=1)), float(ttest_rel(a, b).pvalue)


def test_pairs_with_own_controls_under_every_other_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--pair loss.name=A loss.name=B pairs A with B separately under each value of the other grouping key."""
    dirs = {
        (miss, loss, s): _fake_run(tmp_path / f"{miss}-{loss}-s{s}", loss, s, missing=miss)
        for miss in ("single-positive", "drop:0.5")
        for loss in ("hill", "hill+clml", "splc", "splc+clml")
        for s in (0, 1, 2)
    }
    pairs = [("loss.name=hill+clml", "loss.name=hill"), ("loss.name=splc+clml", "loss.name=splc")]
    c = compare_runs(list(dirs.values()), group_by="data.missing,loss.name", pairs=pairs)
    assert c.baseline is None and len(c.groups) == 8
    for g in c.groups:
        miss, loss = g.values["data.missing"], g.values["loss.name"]
        if "+clml" not in loss:
            assert g.control is None and g.deltas == {}
            continue
        base = loss.removesuffix("+clml")
        assert g.control == f"data.missing={miss},loss.name={base}"
        x = [_metrics(dirs[(miss, loss, s)]) for s in (0, 1, 2)]
        y = [_metrics(dirs[(miss, base, s)]) for s in (0, 1, 2)]
        for m in ("mAP", "CF1", "OF1"):
            mean, std, p = _paired(x, y, m)
            d = g.deltas[m]
            assert d.pairs == 3 and math.isclose(d.mean, mean, abs_tol=1e-12)
            assert math.isclose(d.std, std, abs_tol=1e-12) and math.isclose(d.p, p, rel_tol=1e-9)
        assert g.time_s == 12.0  # 2 + 4 + 6 s of log.jsonl's time_s
    # the CLI: the same pairs, the vs column, the Markdown file
    md = tmp_path / "t.md"
    args = [
        "compare",
        *map(str, dirs.values()),
        "--group-by",
        "data.missing,loss.name",
        "--out",
        str(tmp_path / "c.html"),
    ]
    assert main([*args, "--markdown", str(md), *(x for p in pairs for x in ("--pair", *p))]) == 0
    printed = capsys.readouterr().out
    assert md.read_text() in printed and "| vs |" in md.read_text()
    row = next(
        line for line in printed.splitlines() if line.startswith("| data.missing=drop:0.5,loss.name=hill+clml |")
    )
    assert "| loss.name=hill | 3 |" in row  # the vs column: the terms where the control differs
    with pytest.raises(CompareError, match="no group data.missing=single-positive,loss.name=bce to pair"):
        compare_runs(
            list(dirs.values()), group_by="data.missing,loss.name", pairs=[("loss.name=hill", "loss.name=bce")]
        )
    with pytest.raises(CompareError, match="exclude each other"):
        compare_runs(list(dirs.values()), baseline="x", pairs=pairs)


def test_group_by_run_name(tmp_path: Path) -> None:
    """``name``: the folder's name without its seed suffix; a MulCon stage folder is ``<run>/stage1``."""
    dirs = [_fake_run(tmp_path / f"linear-s{s}", "bce", s) for s in (0, 1)]
    dirs += [_fake_run(tmp_path / f"attn_s{s}" / "stage1", "bce+clml", s) for s in (0, 1)]
    c = compare_runs(dirs, group_by="name", pairs=[("name=attn/stage1", "name=linear")])
    assert [g.name for g in c.groups] == ["name=linear", "name=attn/stage1"]
    assert c.groups[1].control == "name=linear" and c.groups[1].deltas["mAP"].pairs == 2


def test_mulcon_run_read_from_stage2_by_compare_and_report(tmp_path: Path) -> None:
    """A MulCon run as the trainer writes it: root config.yaml and a copy of metrics.json, everything in stage2/.

    Before one rule, compare read the root (no log.jsonl there: no validation curve) and report read stage2.
    """
    from mlcl.report import write_run_report
    from mlcl.report.run_folder import locate_run
    from tests.test_report import _fake_run as _report_run

    root = tmp_path / "mulcon-s0"
    stage2 = _report_run(root / "stage2", 5)
    _report_run(root / "stage1", 5, seed=1)
    (root / "config.yaml").write_text(yaml.safe_dump({"train": {"seed": 0, "method": "mulcon"}, "loss": {}}))
    (root / "metrics.json").write_text(json.dumps({**json.loads((stage2 / "metrics.json").read_text()), "stage": 2}))
    located = locate_run(root)
    assert located.stage == stage2 and located.config == root / "config.yaml"
    run = compare_runs([root]).groups[0].runs[0]
    log = [json.loads(line) for line in (stage2 / "log.jsonl").read_text().splitlines()]
    assert run.curve == {r["epoch"]: r["val"]["model"]["mAP"] for r in log} and run.seed == 0
    assert run.time_s == sum(r["time_s"] for r in log)
    page = write_run_report(root).read_text()
    assert f"<td>folder</td><td>{stage2}</td>" in page and "method: mulcon" in page


def test_runs_with_classes_never_predicted_are_named(runs: list[Path], tmp_path: Path) -> None:
    assert "never" not in to_markdown(compare_runs(runs)) and "id='unpredicted'" not in build_compare_page(
        compare_runs(runs)
    )
    for name, missed in (("clml-1", ["dog"]), ("clml-3", ["cat", "car"])):
        path = tmp_path / name / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "unpredicted_classes": missed}))
    c = compare_runs(runs)
    expected = "loss.name=bce+clml (seed 1: 1, seed 3: 2)"
    assert (
        f"predicted positive for at the run's threshold (of 4; CF1 counts each as 0 whatever its AP): {expected}."
        in (to_markdown(c))
    )
    assert "id='unpredicted'" in build_compare_page(c) and expected in build_compare_page(c)


# --- the page's rough edges (issue 21): the table at 1400 px, one epoch's ticks, p-values of two pairs ----------


def _xtick_labels(page: str, fig: str) -> list[str]:
    """The x tick labels of one figure of the page (matplotlib's ``xtick_N`` groups; text stays text)."""
    svg = page.split(f"id='{fig}'>", 1)[1].split("</svg>", 1)[0]
    ticks = re.split(r'<g id="[\w-]*xtick_\d+">', svg)[1:]  # each tick's group holds its line, then its text
    return [re.search(r"<text\b[^>]*>(.*?)</text>", tick, re.S).group(1).strip() for tick in ticks]


def test_one_epoch_gets_integer_epoch_ticks(tmp_path: Path) -> None:
    dirs = [_fake_run(tmp_path / f"bce-{s}", "bce", s) for s in (0, 1)]
    for d in dirs:
        first = (d / "log.jsonl").read_text().splitlines()[0]
        (d / "log.jsonl").write_text(first + "\n")  # one epoch
    ticks = _xtick_labels(build_compare_page(compare_runs(dirs)), "fig-curves")
    assert ticks == ["1"], ticks
    ticks = _xtick_labels(build_compare_page(compare_runs([_fake_run(tmp_path / "three", "bce", 0)])), "fig-curves")
    assert ticks == ["1", "2", "3"], ticks


def test_p_values_of_fewer_than_three_pairs_carry_a_caution(runs: list[Path], tmp_path: Path) -> None:
    """Two pairs (seeds 0 and 1): each p-value says n = 2 and that it is too few; three pairs: no caution."""
    c = compare_runs(runs)
    assert c.groups[1].deltas["mAP"].pairs == 2
    page = build_compare_page(c)
    cells = re.findall(r'<td class="delta"[^>]*data-pairs="(\d)"[^>]*>(.*?)</td>', page)
    assert len(cells) == 3 and all(n == "2" and "n = 2: too few pairs" in html for n, html in cells), cells
    assert all(re.search(r"p [\d.]+", html) for _, html in cells)
    assert to_markdown(c).count("; n = 2 pairs, too few to trust)") == 3
    three = [_fake_run(tmp_path / f"x-{loss}-{s}", loss, s) for loss in ("bce", "asl") for s in (0, 1, 2)]
    c3 = compare_runs(three)
    assert c3.groups[1].deltas["mAP"].pairs == 3
    assert "class='caution'" not in build_compare_page(c3) and "pairs, too few to trust" not in to_markdown(c3)


def test_table_fits_the_window_in_chromium(tmp_path: Path) -> None:
    """At 1400 px the whole table shows (no clipped column); a narrow window scrolls the table, not the page."""
    from tests.test_report_browser import check_page

    dirs = [_fake_run(tmp_path / f"bce-{s}", "bce", s) for s in (0, 1, 2)]
    dirs += [_fake_run(tmp_path / f"clml-{s}", "bce+clml", s) for s in (0, 1, 3)]
    dirs += [_fake_run(tmp_path / f"asl-{s}", "asl+clml", s, lr=0.1, missing="single-positive") for s in (0, 1)]
    page, _ = write_compare(dirs, tmp_path / "compare.html")
    driver = check_page(page, tmp_path / "compare.png")
    fits = (
        "return Array.from(document.querySelectorAll('.wide')).map(w => [w.firstElementChild.id, w.scrollWidth,"
        " w.clientWidth]).concat([['page', document.documentElement.scrollWidth, window.innerWidth]]);"
    )
    try:
        driver.set_window_size(1400, 1200)
        sizes = driver.execute_script(fits)
        scroll, client = next((s, c) for name, s, c in sizes if name == "compare")
        assert scroll <= client + 1, sizes  # the main table: no column cut off behind a scroll bar
        assert {"compare", "per-class", "runs", "page"} <= {name for name, _, _ in sizes}  # every table can scroll
        assert all(scroll <= client + 1 for _, scroll, client in sizes), sizes
        cells = driver.execute_script(
            "return Array.from(document.querySelectorAll('#compare td, #compare th')).map(e => "
            "e.getBoundingClientRect().right);"
        )
        right = driver.execute_script("return document.querySelector('.wide').getBoundingClientRect().right;")
        assert max(cells) <= right + 1  # every column inside the visible box
        driver.set_window_size(700, 1200)
        sizes = driver.execute_script(fits)
        page_scroll, page_width = sizes[-1][1:]
        assert page_scroll <= page_width, sizes  # the page does not scroll sideways; a table may
        driver.save_screenshot(str(tmp_path / "compare-narrow.png"))
    finally:
        driver.quit()
