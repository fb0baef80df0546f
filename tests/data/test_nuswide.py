"""The NUS-WIDE reader (``mlcl.data.nuswide``): the official layout and the CSV variant.

Expected targets are written out by hand from the fixture contents (never produced by the readers).
Image files are tiny byte strings: the readers only check existence and never decode.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcl.data import nuswide
from mlcl.errors import DataError
from tests.helpers.readers import NUS_Q2L_ORDER, rows, touch


def build_nus_official(root: Path, concepts: list[str] | None) -> Path:
    """Three-concept (or, with ``None``, builtin 81-concept) official layout."""
    train_list = [
        "C:\\ImageData\\Flickr\\actor\\0001_1.jpg",
        "actor\\0002_2.jpg",
        "animal\\0003_3.jpg",
        "animal\\0004_4.jpg",
    ]
    test_list = ["actor\\0005_5.jpg", "beach\\0006_6.jpg"]
    (root / "ImageList").mkdir(parents=True)
    (root / "ImageList" / "TrainImagelist.txt").write_text("\r\n".join(train_list) + "\r\n")
    (root / "ImageList" / "TestImagelist.txt").write_text("\n".join(test_list) + "\n")
    names = concepts if concepts is not None else list(nuswide.NUS_CONCEPTS)
    if concepts is not None:
        (root / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    # Positives per image (by concept name); everything else 0.
    train_pos = [{"sky", "person"}, {"person"}, set(), {"sky"}]
    test_pos = [{"clouds"}, {"person", "clouds"}]
    labels = root / "Groundtruth" / "TrainTestLabels"
    labels.mkdir(parents=True)
    for name in names:
        (labels / f"Labels_{name}_Train.txt").write_text("".join(f"{int(name in p)}\n" for p in train_pos))
        (labels / f"Labels_{name}_Test.txt").write_text("".join(f"{int(name in p)}\n" for p in test_pos))
    for rel in ("actor/0001_1.jpg", "actor/0002_2.jpg", "animal/0003_3.jpg", "0004_4.jpg", "actor/0005_5.jpg",
                "beach/0006_6.jpg"):  # fmt: skip
        touch(root / "Flickr" / rel)  # 0004_4.jpg only in a flattened copy
    return root


def test_nus_official_layout(tmp_path: Path) -> None:
    root = build_nus_official(tmp_path / "nus", ["clouds", "person", "sky"])
    assert nuswide.detect_variant(root) == "official"
    ls = nuswide.read(root, "train")
    assert ls.class_names == ["clouds", "person", "sky"]
    assert rows(ls) == {
        "Flickr/actor/0001_1.jpg": [0, 1, 1],  # Windows path with a C:\ImageData\Flickr\ prefix
        "Flickr/actor/0002_2.jpg": [0, 1, 0],
        "Flickr/0004_4.jpg": [0, 0, 1],  # resolved in a flattened copy
    }
    assert ls.meta["num_unannotated_excluded"] == 1 and ls.source.endswith("TrainImagelist.txt")
    assert len(nuswide.read(root, "train", keep_unannotated=True)) == 4
    assert rows(nuswide.read(root, "test")) == {
        "Flickr/actor/0005_5.jpg": [1, 0, 0],
        "Flickr/beach/0006_6.jpg": [1, 1, 0],
    }


def test_nus_official_builtin_concepts(tmp_path: Path) -> None:
    root = build_nus_official(tmp_path / "nus", None)
    ls = nuswide.read(root, "test")
    assert ls.class_names == sorted(NUS_Q2L_ORDER) and len(ls.class_names) == 81
    expected = [[0] * 81 for _ in range(2)]
    for r, names in enumerate([{"clouds"}, {"person", "clouds"}]):
        for n in names:
            expected[r][sorted(NUS_Q2L_ORDER).index(n)] = 1
    assert ls.targets.tolist() == expected


def test_nus_official_errors(tmp_path: Path) -> None:
    root = build_nus_official(tmp_path / "nus", ["clouds", "person", "sky"])
    sky = root / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt"
    sky.write_text("1\n0\n2\n1\n")
    with pytest.raises(DataError, match=r"Labels_sky_Train\.txt:3: expected 0 or 1, found '2'"):
        nuswide.read(root, "train")
    sky.write_text("1\n0\n0\n")
    with pytest.raises(DataError, match=r"Labels_sky_Train\.txt: 3 lines, but the image list has 4"):
        nuswide.read(root, "train")
    sky.write_text("1\n0\n0\n1\n")
    (root / "Flickr" / "actor" / "0002_2.jpg").unlink()
    with pytest.raises(
        DataError, match=r"TrainImagelist\.txt: image file not found: .*0002_2\.jpg \(listed at line 2\)"
    ):
        nuswide.read(root, "train")
    (root / "Groundtruth" / "TrainTestLabels" / "Labels_person_Test.txt").unlink()
    with pytest.raises(DataError, match=r"label file not found: .*Labels_person_Test\.txt"):
        nuswide.read(root, "test")
    with pytest.raises(DataError, match="no NUS-WIDE data found"):
        nuswide.read(tmp_path / "empty", "train")


def build_nus_csv(root: Path) -> Path:
    rows_ = [
        'filepath,label,split_name',
        'images/a.jpg,"[\'clouds\', \'sky\']",train',
        'images/b.jpg,"[\'person\']",val',
        'images/c.jpg,[],train',
        'images/d.jpg,"[\'sky\']",train',
    ]  # fmt: skip
    root.mkdir(parents=True)
    (root / "nus_wid_data.csv").write_text("\n".join(rows_) + "\n")
    for name in "abcd":
        touch(root / "images" / f"{name}.jpg")
    return root


def nus_row(*names: str) -> list[int]:
    order = sorted(NUS_Q2L_ORDER)
    return [int(n in names) for n in order]


def test_nus_csv_variant(tmp_path: Path) -> None:
    root = build_nus_csv(tmp_path / "nus")
    assert nuswide.detect_variant(root) == "csv"
    train = nuswide.read(root, "train")
    assert train.class_names == sorted(NUS_Q2L_ORDER)
    assert rows(train) == {"images/a.jpg": nus_row("clouds", "sky"), "images/d.jpg": nus_row("sky")}
    assert train.meta["variant"] == "csv" and train.meta["num_unannotated_excluded"] == 1
    test = nuswide.read(root / "nus_wid_data.csv", "test")  # the CSV itself as root; test = split_name val
    assert rows(test) == {"images/b.jpg": nus_row("person")}


def test_nus_csv_errors(tmp_path: Path) -> None:
    root = build_nus_csv(tmp_path / "nus")
    csv_file = root / "nus_wid_data.csv"
    text = csv_file.read_text()
    csv_file.write_text(text.replace("'sky']\",train\nimages/b", "'skyy']\",train\nimages/b"))
    with pytest.raises(DataError, match=r"nus_wid_data\.csv:2: unknown concept 'skyy'"):
        nuswide.read(root, "train")
    csv_file.write_text(text.replace("[]", "[oops"))
    with pytest.raises(DataError, match=r"nus_wid_data\.csv:4: label .* is not a list literal"):
        nuswide.read(root, "train")
    csv_file.write_text(text.replace("split_name", "subset"))
    with pytest.raises(DataError, match="no split column"):
        nuswide.read(root, "train")
