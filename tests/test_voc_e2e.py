"""``benchmarks/voc_split.py`` (VOC's train / val as CSVs read in place) and ``benchmarks/voc_e2e.py``'s queue: a
finished run is skipped and its checkpoints pruned, an unfinished one runs, the CLML grid's choice queues the
second protocol (no real training: ``run_train`` is replaced by a recorder)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from mlcl.data.csv_format import read_csv_labels
from mlcl.errors import DataError
from tests.helpers.paths import SHARED

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "person"]


def _load(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_voc(folder: Path) -> Path:
    """A VOC-shaped folder: 5 images, split.csv, labels.csv and labels_with_difficult.csv."""
    (folder / "images").mkdir(parents=True)
    rows = {  # name: (split, labels, labels with difficult)
        "000005.jpg": ("val", "1,0,0", "1,0,-1"),
        "000007.jpg": ("train", "0,1,0", "0,1,0"),
        "000009.jpg": ("train", "0,0,1", "-1,0,1"),
        "000012.jpg": ("val", "1,1,0", "1,1,0"),
        "000016.jpg": ("train", "1,0,1", "1,0,1"),
    }
    for i, name in enumerate(rows):
        Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(folder / "images" / name)
    head = "filename," + ",".join(CLASSES)
    (folder / "split.csv").write_text("filename,split\n" + "".join(f"{n},{r[0]}\n" for n, r in rows.items()))
    (folder / "labels.csv").write_text(head + "\n" + "".join(f"{n},{r[1]}\n" for n, r in rows.items()))
    (folder / "labels_with_difficult.csv").write_text(head + "\n" + "".join(f"{n},{r[2]}\n" for n, r in rows.items()))
    return folder


def test_split_writes_train_and_val_reading_the_images_in_place(tmp_path: Path) -> None:
    voc = _tiny_voc(tmp_path / "voc")
    files = _load("voc_split").make_split(voc, tmp_path / "runs" / "split")
    assert set(files) == {"train", "val", "train_difficult", "val_difficult"}
    assert not list((tmp_path / "runs").rglob("*.jpg"))  # nothing copied
    expected = {  # independent of the script: the rows above
        "train": (["000007.jpg", "000009.jpg", "000016.jpg"], [[0, 1, 0], [0, 0, 1], [1, 0, 1]]),
        "val": (["000005.jpg", "000012.jpg"], [[1, 0, 0], [1, 1, 0]]),
        "train_difficult": (["000007.jpg", "000009.jpg", "000016.jpg"], [[0, 1, 0], [-1, 0, 1], [1, 0, 1]]),
        "val_difficult": (["000005.jpg", "000012.jpg"], [[1, 0, -1], [1, 1, 0]]),
    }
    for key, (names, targets) in expected.items():
        data = read_csv_labels(files[key])  # checks that every image exists and decodes
        assert data.class_names == CLASSES
        assert [Path(p).resolve() for p in data.items] == [(voc / "images" / n).resolve() for n in names]
        assert all(not Path(i).is_absolute() for i in data.ids)
        assert data.targets.tolist() == targets


def test_split_rejects_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    voc = _tiny_voc(tmp_path / "voc")
    split = _load("voc_split")
    text = (voc / "split.csv").read_text()
    (voc / "split.csv").write_text(text.replace("000009.jpg,train", "000009.jpg,trainval"))
    with pytest.raises(DataError, match=r"split\.csv: line 4: split 'trainval' of '000009.jpg'"):
        split.make_split(voc, tmp_path / "out")
    (voc / "split.csv").write_text(text.replace("000016.jpg,train\n", ""))
    with pytest.raises(DataError, match=r"'000016.jpg' is not in .*split\.csv"):
        split.make_split(voc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (voc / "split.csv").write_text(text)
    (tmp_path / "out" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="images exists"):
        split.make_split(voc, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.csv"))


@pytest.mark.skipif(not (SHARED / "data" / "voc2007" / "split.csv").is_file(), reason="no ../shared VOC copy")
def test_split_of_the_shared_voc_copy(tmp_path: Path) -> None:
    voc = SHARED / "data" / "voc2007"
    files = _load("voc_split").make_split(voc, tmp_path / "split")
    sizes = {k: read_csv_labels(p, check_images=False) for k, p in files.items()}
    assert len(sizes["train"]) == 2500 and len(sizes["val"]) == 1508  # SOURCE.md
    unknown = sum(int((sizes[k].targets == -1).sum()) for k in ("train_difficult", "val_difficult"))
    assert unknown == 482 and int((sizes["train"].targets == -1).sum()) == 0
    assert Path(sizes["val"].items[0]).resolve() == (voc / "images" / "000005.jpg").resolve()


def _args(root: Path, voc: Path, **kw: object) -> argparse.Namespace:
    base = {
        "root": root, "voc": voc, "weights": Path("w.pth"), "device": "cpu", "jobs": 1, "threads": 1, "workers": 0,
        "image_size": 64, "epochs": 2, "frozen": "missing", "frozen_epochs": 3, "deadline_s": math.inf,
        "methods": "AN,Hill", "grid_methods": "", "studies": "reference,missing,mulcon",
    }  # fmt: skip
    return argparse.Namespace(**(base | kw))


def test_driver_skips_finished_runs_prunes_and_chooses_the_clml_weight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    voc_e2e = _load("voc_e2e")
    miml_e2e = sys.modules["miml_e2e"]
    root = tmp_path / "runs"
    ran: list[list[str]] = []
    folders: list[Path] = []
    val_map = {"none": 0.50, "clml0.01": 0.51, "clml0.1": 0.55, "clml1": 0.53, "clml10": 0.40}

    def fake_run(args: list[str], folder: Path, *, control: list[str], threads: int) -> tuple[int, float]:
        ran.append(args)
        folders.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "last.pt").write_bytes(b"x")
        (folder / "best.pt").write_bytes(b"x")
        tag = folder.name.split("-")[1] if folder.parent.name == "missing" else "none"
        (folder / "metrics.json").write_text(json.dumps({"best_val_mAP": val_map[tag]}))
        return 0, 0.1

    monkeypatch.setattr(miml_e2e, "run_train", fake_run)
    # a finished run (skipped; its checkpoints pruned) and a stopped one (run; its last.pt kept until it finishes)
    done = root / "reference" / "probe-s0"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    (done / "best.pt").write_bytes(b"x")
    (done / "stage1").mkdir()
    (done / "stage1" / "last.pt").write_bytes(b"x")
    pool, reference, missing, mulcon, _ = voc_e2e.build(_args(root, _tiny_voc(tmp_path / "voc")))
    assert (root / "split" / "train.csv").is_file()
    queued = {j.out.relative_to(root).as_posix(): j for j in pool.queue}
    assert "reference/default-s0" in queued and "mulcon/linear-s0" not in queued  # the linear head = default
    assert (
        queued["reference/probe-s0"].priority
        < queued["reference/default-s0"].priority
        < min(j.priority for j in pool.queue if j.out.parent.name == "missing")
    )
    probe = queued["reference/probe-s0"].args
    assert probe[probe.index("--lr") + 1] == "0" and "train.head_init=probe" in probe and "train.freeze=all" in probe
    an = queued["missing/an-clml0.1-sp-s0"].args
    assert "train.freeze=all" in an and an[an.index("--missing") + 1] == "single-positive"
    assert float(an[an.index("--clml-weight") + 1]) == pytest.approx(0.1 / (32 * 20))
    assert an[len(an) - 1 - an[::-1].index("--epochs") + 1] == "3"  # the frozen epochs, last one wins

    pool.run(lambda job, ok: missing.done(job, ok) if job.out.parent.name == "missing" else None)
    assert done not in folders and root / "reference" / "default-s0" in folders  # finished: not run again
    # every queued run but the finished one, then partial:0.5 and the chosen weight on seeds 1-2, each once
    assert len(folders) == len(set(folders)) == len(queued) - 1 + 18 + 4
    assert not list(root.rglob("*.pt"))  # every finished run pruned
    assert missing.chosen == 0.1  # the hold-out's best of the seed-0 grid, inside it
    partial = [a for a in ran if "partial:0.5" in a]
    weights = {a[a.index("--clml-weight") + 1] for a in partial if "--clml-weight" in a}
    assert sorted(float(w) for w in weights) == pytest.approx([0.1 / 640, 1.0 / 640])
    assert len(partial) == 2 * 3 * 3  # 2 bases x (none, chosen, official) x 3 seeds

    # the tables of the finished runs, read back without running anything: the grid's choice again, checkpoints pruned
    (root / "missing" / "an-none-sp-s0" / "best.pt").write_bytes(b"x")
    pool3, _, missing3, _, _ = voc_e2e.build(_args(root, tmp_path / "voc"))
    pool3.replay(lambda job, ok: missing3.done(job, ok) if job.out.parent.name == "missing" else None)
    assert missing3.chosen == 0.1 and not list(root.rglob("*.pt"))

    # resumed: nothing left to run
    ran.clear()
    pool2, _, missing2, _, _ = voc_e2e.build(_args(root, tmp_path / "voc"))
    pool2.run(lambda job, ok: missing2.done(job, ok) if job.out.parent.name == "missing" else None)
    assert ran == [] and missing2.chosen == 0.1 and len(pool2.queue) == 0


def test_prune_leaves_unfinished_runs_alone(tmp_path: Path) -> None:
    runs = _load("_runs")
    (tmp_path / "stage2").mkdir(parents=True)
    (tmp_path / "stage2" / "last.pt").write_bytes(b"x")
    assert runs.prune_checkpoints(tmp_path) == [] and (tmp_path / "stage2" / "last.pt").is_file()
    (tmp_path / "stage2" / "metrics.json").write_text("{}")
    assert runs.prune_checkpoints(tmp_path) == [tmp_path / "stage2" / "last.pt"]
