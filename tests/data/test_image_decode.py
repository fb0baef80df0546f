"""Reduced-scale JPEG decoding: smaller decodes, the same transform outputs up to resampling.

Real photos read in place: scikit-learn's ``china.jpg`` and ``flower.jpg`` (640x427) and matplotlib's
``grace_hopper.jpg`` (512x600). The reference is a full-size decode followed by the same transform.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image
from torchvision import transforms as T

from mlcl.data.dataset import ImageDataset, load_image, load_prepared
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.transforms import HEADROOM, build_transform

PHOTOS = [
    Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
    Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
    Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
]
NORM = {"mean": [0.5] * 3, "std": [0.5] * 3}


def _full(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def test_photos_are_there() -> None:
    sizes = [_full(p).size for p in PHOTOS]
    assert sizes == [(640, 427), (640, 427), (512, 600)]


@pytest.mark.parametrize(("size", "decoded"), [(64, [(320, 214), (320, 214), (128, 150)]), (200, [(640, 427)] * 2)])
def test_jpeg_is_decoded_at_the_smallest_scale_that_keeps_twice_the_output(
    size: int, decoded: list[tuple[int, int]]
) -> None:
    tf = build_transform(size, train=False, **NORM)
    got = [load_image(str(p), source_size=tf.source_size).size for p in PHOTOS[: len(decoded)]]
    assert got == decoded  # 64 px: 1/2 (1/4 gives 160x107, < 128), 1/4 for the 512x600 one; 200 px: none
    assert all(min(w, h) >= HEADROOM * size or (w, h) == (640, 427) for w, h in got)


@pytest.mark.parametrize("size", [64, 96])
def test_evaluation_tensor_is_the_full_decode_within_resampling(size: int) -> None:
    """The evaluation transform of a reduced decode against the same transform of a full decode: a mean absolute
    difference under 2 of 255 levels per photo (measured 0.4-1.6; bicubic instead of bilinear resampling of the
    full decode differs from it by 0.8-2.6)."""
    tf = build_transform(size, train=False, **NORM)
    data = MultiLabelSet(["x"], torch.ones(3, 1, dtype=torch.int8), [str(p) for p in PHOTOS], ["a", "b", "c"])
    ds = ImageDataset(data, tf, normalize_on_batch=True)
    for i, path in enumerate(PHOTOS):
        assert load_prepared(str(path), tf).size == (size, size)
        got = ds.collate([ds[i]])[0][0]
        want = tf(_full(path))
        levels = (got - want).abs() * 0.5 * 255  # std 0.5: one level is 2/255 after normalisation
        assert float(levels.mean()) < 2.0, (path.name, float(levels.mean()))
        assert not torch.equal(got, want)  # the decode was reduced (else this test checks nothing)


def test_crops_of_the_reduced_image_match_crops_of_the_full_image() -> None:
    """The training path (reduced decode, Lanczos to the prepared size) against the full decode, for the same
    crop boxes in relative coordinates, resized to ``S`` as ``RandomResizedCrop`` does. Over 30 boxes per photo
    the mean absolute difference is under 1.5 levels (measured 0.4-1.0) and under 3/4 of what bicubic instead of
    bilinear resampling of the full decode changes (measured 1.7-2.9)."""
    size = 48
    tf = build_transform(size, train=True, augment="default", **NORM)
    rng = random.Random(0)
    for path in PHOTOS:
        full = _full(path)
        prepared = load_prepared(str(path), tf)
        assert prepared.size == tf.source_size(*full.size) and prepared.size[0] < full.size[0]
        W, H = full.size
        sx, sy = W / prepared.size[0], H / prepared.size[1]
        diffs, bicubic = [], []
        for _ in range(30):
            s, r = rng.uniform(0.5, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = min(W, math.sqrt(W * H * s * r)), min(H, math.sqrt(W * H * s / r))
            x0, y0 = rng.uniform(0, W - cw), rng.uniform(0, H - ch)
            want = np.asarray(full.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch)), float)
            box = (x0 / sx, y0 / sy, (x0 + cw) / sx, (y0 + ch) / sy)
            got = np.asarray(prepared.resize((size, size), Image.BILINEAR, box=box), float)
            other = np.asarray(full.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch)), float)
            diffs.append(np.abs(want - got).mean())
            bicubic.append(np.abs(want - other).mean())
        assert float(np.mean(diffs)) < min(1.5, 0.75 * float(np.mean(bicubic))), (path.name, np.mean(diffs))


def test_crop_parameters_keep_their_distribution() -> None:
    """``RandomResizedCrop`` draws its boxes relative to the image: on the reduced image the crops' relative areas
    and aspects have the distribution they have on the full image (two-sample Kolmogorov-Smirnov, 600 draws)."""
    from scipy.stats import ks_2samp

    tf = build_transform(48, train=True, augment="default", **NORM)
    crop = tf.steps[0]
    assert isinstance(crop, T.RandomResizedCrop)
    full = Image.new("RGB", (640, 427))
    reduced = Image.new("RGB", tf.source_size(640, 427))

    def draws(image: Image.Image) -> tuple[list[float], list[float]]:
        torch.manual_seed(1)
        boxes = [T.RandomResizedCrop.get_params(image, crop.scale, crop.ratio) for _ in range(600)]
        area = [h * w / (image.size[0] * image.size[1]) for _, _, h, w in boxes]
        return area, [w / h for _, _, h, w in boxes]

    (a_full, r_full), (a_red, r_red) = draws(full), draws(reduced)
    assert ks_2samp(a_full, a_red).pvalue > 0.05 and ks_2samp(r_full, r_red).pvalue > 0.05
    assert reduced.size[0] < 640


def test_non_jpeg_is_decoded_in_full(tmp_path: Path) -> None:
    png = tmp_path / "china.png"
    _full(PHOTOS[0]).save(png)
    tf = build_transform(64, train=False, **NORM)
    assert load_image(str(png), source_size=tf.source_size).size == (640, 427)
    # the prepared image is the warp all the same, equal to the transform's own first step
    np.testing.assert_array_equal(np.asarray(load_prepared(str(png), tf)), np.asarray(tf.steps[0](_full(png))))
