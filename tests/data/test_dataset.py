from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mlcl.data.builtin import load_builtin
from mlcl.data.dataset import ImageDataset
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.split import holdout_split, load_split, save_split
from mlcl.errors import ConfigError, DataError


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1)


def noisy(image: Image.Image) -> torch.Tensor:
    return to_tensor(image) + torch.rand(1)


def array_set() -> MultiLabelSet:
    g = np.random.default_rng(0)
    items = g.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    targets = torch.tensor([[1, 0, -1], [0, 0, 0], [1, 1, 1], [-1, -1, 0], [0, 1, 0]], dtype=torch.int8)
    return MultiLabelSet(["a", "b", "c"], targets, items, [f"m{i}" for i in range(5)], source="mem")


def test_array_items() -> None:
    s = array_set()
    ds = ImageDataset(s, to_tensor)
    assert len(ds) == 5
    image, target, index = ds[2]
    assert index == 2 and isinstance(index, int)
    assert target.dtype == torch.float32 and target.tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), s.items[2].astype(np.float32))
    assert ds[-1][2] == 4
    with pytest.raises(IndexError):
        ds[5]


def test_default_transform_scales_to_unit_interval() -> None:
    s = array_set()
    image, _, _ = ImageDataset(s)[0]
    assert image.shape == (3, 6, 7) and image.dtype == torch.float32
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), s.items[0] / 255.0, atol=1e-6)


def test_path_items_grey_and_rgba_become_rgb(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "r.png")
    s = MultiLabelSet(["x"], torch.tensor([[1], [0]]), [str(tmp_path / "g.png"), str(tmp_path / "r.png")], ["g", "r"])
    ds = ImageDataset(s, to_tensor)
    g_img = ds[0][0]
    assert g_img.shape == (3, 3, 4)
    for channel in range(3):
        np.testing.assert_array_equal(g_img[channel].numpy(), grey.astype(np.float32))
    r_img = ds[1][0]
    assert r_img.shape == (3, 3, 4) and float(r_img[0].min()) == 200.0 and float(r_img[1:].max()) == 0.0


def test_broken_file_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    s = MultiLabelSet(["x"], torch.tensor([[1], [0]]), [str(bad), str(tmp_path / "gone.jpg")], ["b", "g"])
    ds = ImageDataset(s, to_tensor)
    with pytest.raises(DataError, match="broken.jpg"):
        ds[0]
    with pytest.raises(DataError, match="gone.jpg"):
        ds[1]


def test_two_views_are_independent() -> None:
    ds = ImageDataset(array_set(), noisy, views=2)
    views, target, index = ds[1]
    assert views.shape == (2, 3, 6, 7)
    assert not torch.equal(views[0], views[1])
    base = to_tensor(Image.fromarray(array_set().items[1]))
    for v in views:
        offset = v - base
        assert torch.allclose(offset, offset.flatten()[0].expand_as(offset), atol=1e-4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="views"):
        ImageDataset(array_set(), to_tensor, views=0)
    with pytest.raises(TypeError, match="MultiLabelSet"):
        ImageDataset([1, 2], to_tensor)  # type: ignore[arg-type]


def test_pickles_and_collates() -> None:
    ds = ImageDataset(array_set(), to_tensor)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], ds[3][0]) and torch.equal(clone[3][1], ds[3][1])
    images, targets, index = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert images.shape == (4, 3, 6, 7) and targets.shape == (4, 3) and index.tolist() == [0, 1, 2, 3]


def test_builtin_through_dataset() -> None:
    s = load_builtin("val")
    image, target, _ = ImageDataset(s)[7]
    assert image.shape == (3, 48, 48)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy() * 255.0, s.items[7], atol=1e-3)
    assert torch.equal(target, s.targets[7].float())


# ---- splits -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(100, 0.1, 10), (7, 0.5, 4), (2, 0.01, 1), (10, 0.99, 9)])
def test_holdout_split_partition(n: int, fraction: float, n_val: int) -> None:
    train, val = holdout_split(n, fraction, seed=3)
    assert len(val) == n_val
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    a, b = holdout_split(n, fraction, seed=3)
    assert np.array_equal(a, train) and np.array_equal(b, val)


def test_holdout_split_seed_matters_and_is_random() -> None:
    _, v0 = holdout_split(1000, 0.2, seed=0)
    _, v1 = holdout_split(1000, 0.2, seed=1)
    assert not np.array_equal(v0, v1)
    assert 350 < float(v0.mean()) < 650  # not a contiguous block at either end


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.1), (10, 0.0), (10, 1.0), (10, float("nan"))])
def test_holdout_split_bad_arguments(n: int, fraction: float) -> None:
    with pytest.raises(ConfigError):
        holdout_split(n, fraction)


def test_split_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    save_split(path, ["a.jpg", "b.jpg"], ["c.jpg"])
    assert os.listdir(tmp_path) == ["split.json"]
    assert load_split(path) == (["a.jpg", "b.jpg"], ["c.jpg"])
    payload = json.loads(path.read_text())
    assert payload["num_train"] == 2 and payload["num_val"] == 1


def test_split_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        save_split(tmp_path / "s.json", ["a"], ["a"])
    with pytest.raises(ValueError, match="twice"):
        save_split(tmp_path / "s.json", ["a", "a"], [])
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_split(bad)
    bad.write_text(json.dumps({"format": "mlcl-split", "train": ["a"], "val": "b"}))
    with pytest.raises(DataError, match="'val'"):
        load_split(bad)
