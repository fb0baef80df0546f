"""The decoded-image cache: the same tensors as without it, no decoding once built, one copy for all workers.

Real MIML photos read in place from ``../shared/data/miml`` and one larger real photo (scikit-learn's
``china.jpg``, 640x427, reduced by the transforms at these sizes).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mlcl.data.cache import DecodedImageCache, cache_datasets
from mlcl.data.dataset import ImageDataset
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.transforms import build_transform
from mlcl.errors import ConfigError

CHINA = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _photos(shared_dir: Path, n: int = 12) -> MultiLabelSet:
    files = sorted((shared_dir / "data" / "miml" / "images").glob("*.jpg"))[: n - 1] + [CHINA]
    targets = torch.randint(0, 2, (len(files), 3), generator=torch.Generator().manual_seed(0)).to(torch.int8)
    return MultiLabelSet(["a", "b", "c"], targets, [str(f) for f in files], [f.name for f in files], source="photos")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``PIL.Image.open`` call (the decoder's entry), counted."""
    calls: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return calls


def _epoch(ds: ImageDataset, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(ds, batch_size=5, num_workers=workers, collate_fn=ds.collate)
    xs, idx = zip(*[(x, i) for x, _, i in loader], strict=True)
    return torch.cat(xs), torch.cat(idx)


@pytest.mark.parametrize("train", [False, True])
def test_cached_epoch_gives_the_same_tensors_and_decodes_nothing(
    train: bool, shared_dir: Path, decodes: list[str]
) -> None:
    data = _photos(shared_dir)
    tf = build_transform(56, train=train, augment="default", **NORM)
    plain = ImageDataset(data, tf, seed=3, normalize_on_batch=True)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        want = _epoch(plain)
    assert len(decodes) == 2 * len(data)
    cached = ImageDataset(data, tf, seed=3, normalize_on_batch=True)
    summary = cached.cache_images(2**30)
    assert summary["images"] == summary["of"] == len(data) and summary["bytes"] == summary["needed_bytes"]
    decodes.clear()
    cached.set_epoch(1)
    got = _epoch(cached)
    assert decodes == []  # before: one decode per image and epoch
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
    # the large photo is stored reduced, the MIML ones (<= 224 px) whole for crops, at 56 x 56 for evaluation
    array = cached.cache.get(len(data) - 1) if cached.cache else None
    assert array is not None
    assert array.shape == ((56, 56, 3) if not train else (tf.source_size(640, 427)[1], tf.source_size(640, 427)[0], 3))
    if train:
        with Image.open(data.items[0]) as im:
            assert cached.cache.get(0).shape == (im.size[1], im.size[0], 3)  # type: ignore[union-attr]


def test_two_views_from_the_cache(shared_dir: Path) -> None:
    data = _photos(shared_dir, 6)
    tf = build_transform(40, train=True, augment="strong", **NORM)
    plain = ImageDataset(data, tf, views=2, seed=0, normalize_on_batch=True)
    cached = ImageDataset(data, tf, views=2, seed=0, normalize_on_batch=True)
    cached.cache_images(2**30)
    a, b = plain.collate([plain[i] for i in range(6)]), cached.collate([cached[i] for i in range(6)])
    assert a[0].shape == (12, 3, 40, 40) and torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


def test_budget_caches_a_prefix_and_the_rest_is_decoded(shared_dir: Path, decodes: list[str]) -> None:
    data = _photos(shared_dir)
    tf = build_transform(32, train=False, **NORM)
    ds = ImageDataset(data, tf, normalize_on_batch=True)
    summary = ds.cache_images(5 * 32 * 32 * 3 + 100)
    assert (summary["images"], summary["bytes"], summary["needed_bytes"]) == (5, 5 * 3072, 12 * 3072)
    decodes.clear()
    x, _ = _epoch(ds)
    assert len(decodes) == 7 and decodes == [str(p) for p in data.items[5:]]
    assert torch.equal(x, _epoch(ImageDataset(data, tf, normalize_on_batch=True))[0])
    with pytest.raises(ConfigError, match=r"photos: the 12 decoded images need 0\.00 GiB, more than"):
        ds.cache_images(1000, require_all=True)


def test_run_caches_share_one_budget_and_memory_mode_refuses(shared_dir: Path) -> None:
    data = _photos(shared_dir)
    sets = [ImageDataset(data, build_transform(32, train=False, **NORM)) for _ in range(2)]
    total = cache_datasets([(sets[0], 5), (None, 5), (sets[1], 2)], "auto", 20 * 3072)
    assert total == {"images": 20, "of": 24, "bytes": 20 * 3072, "seconds": total["seconds"]}
    assert sets[0].cache is not None and sets[0].cache.count == 12 and sets[1].cache.count == 8  # type: ignore[union-attr]
    assert cache_datasets([(s, 5) for s in sets], "none", 2**30) is None
    with pytest.raises(ConfigError, match=r"`data.cache=memory`: .* raise `data.cache_gib`, or use `data.cache=auto`"):
        cache_datasets([(s, 1) for s in sets], "memory", 20 * 3072)
    # auto skips a set read once (its cache would cost a pass up front and save nothing)
    once = ImageDataset(data, build_transform(32, train=False, **NORM))
    assert cache_datasets([(once, 1.9)], "auto", 2**30) == {"images": 0, "of": 0, "bytes": 0, "seconds": 0.0}
    assert once.cache is None


def test_in_memory_arrays_are_not_cached() -> None:
    items = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    data = MultiLabelSet(["a"], torch.ones(3, 1, dtype=torch.int8), items, ["0", "1", "2"])
    ds = ImageDataset(data, build_transform(8, train=False, **NORM), normalize_on_batch=True)
    assert ds.cache_images(2**30)["images"] == 0 and ds.cache is None


def _mapping_kib(address: int) -> dict[str, int]:
    """``/proc/self/smaps`` fields (kB) of the mapping that holds ``address``."""
    fields: dict[str, int] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            inside = int(head.group(1), 16) <= address < int(head.group(2), 16)
        elif inside and line.split(":")[0] in ("Rss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty"):
            fields[line.split(":")[0]] = int(line.split()[1])
    return fields


class _Probe(ImageDataset):
    """Reads the whole cache in the worker, then reports the memory of the cache's mapping in that process."""

    def __getitem__(self, index: int):  # type: ignore[no-untyped-def, override]
        assert self.cache is not None
        total = int(self.cache.buffer.sum(dtype=np.int64))  # touches every page
        return torch.tensor([total, *_mapping_kib(self.cache.buffer.ctypes.data).values()])


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs Linux's /proc/self/smaps")
def test_workers_read_the_cache_in_place(shared_dir: Path) -> None:
    """Two DataLoader workers read every page of a 4.8 MB cache: in each, the pages are resident and shared with
    the main process, none private (a copy per worker would be private memory of the full size)."""
    data = _photos(shared_dir, 2)
    data = data.subset([0, 1] * 16)
    ds = _Probe(data, build_transform(224, train=False, **NORM))
    ds.cache_images(2**30)
    assert ds.cache is not None and ds.cache.nbytes == 32 * 224 * 224 * 3
    keys = list(_mapping_kib(ds.cache.buffer.ctypes.data))
    assert keys == ["Rss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty"]
    loader = DataLoader(ds, batch_size=None, num_workers=2, sampler=[0, 1])
    rows = [dict(zip(["sum", *keys], row.tolist(), strict=True)) for row in loader]
    want_sum = int(ds.cache.buffer.sum(dtype=np.int64))
    size_kib = ds.cache.nbytes // 1024
    for row in rows:
        assert row["sum"] == want_sum
        assert row["Rss"] >= 0.9 * size_kib
        assert row["Shared_Clean"] + row["Shared_Dirty"] >= 0.9 * size_kib
        assert row["Private_Clean"] + row["Private_Dirty"] <= 0.05 * size_kib


def test_cache_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="uint8"):
        DecodedImageCache(np.zeros(4, dtype=np.float32), np.zeros(1, dtype=np.int64), np.zeros((1, 2), np.int64))
    with pytest.raises(ConfigError, match="auto, memory or none"):
        cache_datasets([], "disk", 10)


def test_training_loaders_with_and_without_the_cache(tmp_path: Path) -> None:
    """``data.cache=auto`` (the default) caches the training and validation images when the run is built; the
    loaders then give the batches of ``data.cache=none``; ``memory`` over the budget is one clear error."""
    from mlcl.engine.build import build_training
    from mlcl.engine.config import load_config
    from tests.helpers.resume import QUIET_CPU
    from tests.helpers.synthetic import make_shapes_csv

    csv = make_shapes_csv(tmp_path / "data", n=24)
    base = [*QUIET_CPU, "model.backbone=resnet10t", "data.image_size=32", "train.batch_size=8", "train.epochs=3"]
    base += [f"data.train={csv}", f"run.out={tmp_path / 'run'}", "data.num_workers=0"]
    runs = {}
    for mode in ("auto", "none"):
        t = build_training(load_config(None, [*base, f"data.cache={mode}"]), torch.device("cpu"), fresh=True)
        t.train_set.set_epoch(0)
        runs[mode] = (t, [b for b in t.train_loader], [b for b in t.val_loader])
    cached, plain = runs["auto"][0], runs["none"][0]
    assert cached.cfg.data.cache == "auto" and cached.train_set.cache is not None
    assert cached.train_set.cache.count == len(cached.train_set) and plain.train_set.cache is None
    assert cached.val_loader.dataset.cache is not None  # type: ignore[attr-defined]
    for a, b in zip(runs["auto"][1] + runs["auto"][2], runs["none"][1] + runs["none"][2], strict=True):
        assert a[0].dtype == torch.float32 and torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    one_epoch = build_training(load_config(None, [*base, "train.epochs=1"]), torch.device("cpu"), fresh=True)
    assert one_epoch.train_set.cache is None  # read once: not cached
    with pytest.raises(ConfigError, match=r"`data.cache=memory`: .*need .* GiB, more than .*`data.cache_gib`"):
        build_training(
            load_config(None, [*base, "data.cache=memory", "data.cache_gib=1e-6"]), torch.device("cpu"), fresh=True
        )
    with pytest.raises(ConfigError, match="data.cache"):
        load_config(None, [*base, "data.cache=disk"])
