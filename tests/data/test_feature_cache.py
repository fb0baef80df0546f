"""The frozen-trunk cache: storage, budget, and the copies an epoch reads (checked against the image pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlcl.data.csv_format import read_csv_labels
from mlcl.data.dataset import ImageDataset
from mlcl.data.feature_cache import (
    CachedFeatureSet,
    FeatureCache,
    collate_feature_views,
    copy_rule,
    flip_draws,
    resolve_storage,
)
from mlcl.data.transforms import build_transform
from mlcl.errors import ConfigError
from tests.helpers.synthetic import make_shapes_csv

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.mark.parametrize("views", [1, 2])
def test_flip_copy_is_the_fine_tuning_runs_flipped_image(tmp_path: Path, views: int) -> None:
    """Each epoch's copy (the image or its mirror) is exactly what the flip preset gives that image then."""
    labels = read_csv_labels(make_shapes_csv(tmp_path, n=6, size=24))
    flip = ImageDataset(
        labels, build_transform(16, train=True, augment="flip", mean=MEAN, std=STD), views=views, seed=7
    )
    plain = ImageDataset(labels, build_transform(16, train=False, mean=MEAN, std=STD))
    pick = copy_rule("flip", 2, seed=7, views=views)
    mirrored = 0
    for epoch in range(3):
        flip.set_epoch(epoch)
        for i in range(len(labels)):
            got = flip[i][0].reshape(views, 3, 16, 16)
            base = plain[i][0]
            for v in range(views):
                copy = pick(epoch, v, i)
                mirrored += copy
                expected = base.flip(-1) if copy == 1 else base
                assert torch.equal(got[v], expected), (epoch, i, v)
                assert copy == int(flip_draws(7, epoch, i, views)[v])
    assert 0 < mirrored < 3 * len(labels) * views  # both copies occur


def test_sampled_presets_rotate_through_the_copies() -> None:
    pick = copy_rule("default", 3, seed=0, views=2)
    assert [pick(e, v, 5) for e in range(3) for v in range(2)] == [0, 1, 2, 0, 1, 2]
    assert copy_rule("none", 1, seed=0, views=1)(4, 0, 9) == 0


def test_file_cache_leaves_nothing_in_its_folder_and_reads_back(tmp_path: Path) -> None:
    cache = FeatureCache(2, 5, (3, 2), storage="file", folder=tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []  # unlinked as soon as it is mapped
    values = torch.arange(5 * 6, dtype=torch.float32).reshape(5, 3, 2) / 7
    cache.write(1, 0, values)
    assert cache.data.dtype == torch.float16 and cache.nbytes == 2 * 2 * 5 * 6
    torch.testing.assert_close(cache.data[1].float(), values.half().float(), rtol=0, atol=0)


def test_values_beyond_float16_are_refused() -> None:
    cache = FeatureCache(1, 2, (2,), storage="memory")
    with pytest.raises(ValueError, match="do not fit float16"):
        cache.write(0, 0, torch.tensor([[1.0, 7e4], [0.0, 1.0]]))


def test_storage_follows_the_budget(tmp_path: Path) -> None:
    mb = 2**20
    assert resolve_storage("auto", 10 * mb, 16, tmp_path) == "memory"
    assert resolve_storage("auto", 20 * mb, 16, tmp_path) == "file"
    assert resolve_storage("file", 1, 16, tmp_path) == "file"
    with pytest.raises(ConfigError, match="needs 20 MB, over `train.freeze_cache_mb`=16"):
        resolve_storage("memory", 20 * mb, 16, tmp_path)
    with pytest.raises(ConfigError, match="under torch.distributed the cache is held in memory"):
        resolve_storage("auto", 20 * mb, 16, tmp_path, processes=2)
    with pytest.raises(ConfigError, match="MB on disk"):
        resolve_storage("file", 1 << 60, 16, tmp_path)


def test_the_set_fills_its_cache_once_and_collates_view_major() -> None:
    calls = []

    def build() -> FeatureCache:
        calls.append(1)
        cache = FeatureCache(2, 3, (4,), storage="memory")
        for k in range(2):
            cache.write(k, 0, torch.full((3, 4), float(k)) + torch.arange(3.0)[:, None] * 10)
        return cache

    targets = torch.tensor([[1, 0], [0, -1], [1, 1]])
    ds = CachedFeatureSet(targets, build, copy_rule("default", 2, seed=0, views=2), views=2)
    ds[1]  # the first item read fills it (validation), as does the first set_epoch (training)
    ds.set_epoch(0)
    ds.set_epoch(1)
    assert calls == [1]
    feats, tgt, index = collate_feature_views([ds[0], ds[2]])
    # epoch 1, two views: copies (1*2+0) % 2 = 0 and 1; rows view-major
    assert feats.tolist() == [[0.0] * 4, [20.0] * 4, [1.0] * 4, [21.0] * 4]
    assert index.tolist() == [0, 2, 0, 2] and tgt.tolist() == [[1, 0], [1, 1], [1, 0], [1, 1]]
