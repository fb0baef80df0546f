from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mlcl.data.transforms import AUGMENT_PRESETS, CutoutPIL, build_transform


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_presets_give_normalised_square_tensors(preset: str) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    tf = build_transform(32, train=True, augment=preset, mean=[0.5] * 3, std=[0.5] * 3)
    x = tf(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6


def test_eval_transform_is_deterministic_warp() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    tf = build_transform(16, train=False, mean=[0.0] * 3, std=[1.0] * 3)
    a, b = tf(img), tf(img)
    assert torch.equal(a, b)
    expected = torch.from_numpy(np.asarray(img.resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255)
    torch.testing.assert_close(a, expected.permute(2, 0, 1), atol=1 / 255 + 1e-6, rtol=0)


def test_cutout_paints_one_rectangle_of_one_colour() -> None:
    random.seed(3)
    img = Image.new("RGB", (100, 80), (0, 0, 0))
    out = np.asarray(CutoutPIL(0.5)(img))
    changed = (out != 0).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any()
    # One axis-aligned box, at most half the side in each direction, filled with a single colour.
    box = changed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert box.all()
    assert xs.max() - xs.min() + 1 <= 51 and ys.max() - ys.min() + 1 <= 41
    assert len({tuple(c) for c in out[changed]}) == 1
    assert np.asarray(img).max() == 0  # the input image is not modified


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="augment"):
        build_transform(8, train=True, augment="wild", mean=[0.5] * 3, std=[0.5] * 3)


def _photo(seed: int, size: tuple[int, int] = (60, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_uint8_steps_then_batch_normalisation_equal_the_transform(preset: str) -> None:
    """``normalize(to_uint8(img))``, batched, is the Compose's own ``ToTensor`` + ``Normalize`` bit for bit."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tf = build_transform(24, train=True, augment=preset, mean=mean, std=std)
    images = [_photo(i) for i in range(4)]
    want = []
    for i, img in enumerate(images):
        torch.manual_seed(i)
        random.seed(i)
        want.append(tf(img))
    got8 = []
    for i, img in enumerate(images):
        torch.manual_seed(i)
        random.seed(i)
        got8.append(tf.to_uint8(img))
    assert all(x.dtype == torch.uint8 and x.shape == (3, 24, 24) for x in got8)
    got = tf.normalize(torch.stack(got8))
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.stack(want))
    # against an independent float64 formula
    ref = (torch.stack(got8).double() / 255 - torch.tensor(mean).view(3, 1, 1).double()) / torch.tensor(std).view(
        3, 1, 1
    ).double()
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)


def test_normalize_refuses_float_images() -> None:
    tf = build_transform(8, train=False, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(TypeError, match="uint8"):
        tf.normalize(torch.zeros(2, 3, 8, 8))


def test_source_size_of_the_warp_keeps_twice_the_output() -> None:
    tf = build_transform(64, train=False, mean=[0.5] * 3, std=[0.5] * 3)
    assert tf.warps and tf.source_size(640, 427) == (128, 128)
    assert tf.source_size(100, 427) == (100, 128)  # never enlarged
    assert tf.prepared_size(640, 427) == (64, 64)
    small = _photo(0, (50, 30))
    assert np.array_equal(np.asarray(tf.prepare(small)), np.asarray(small.resize((64, 64), Image.BILINEAR)))


@pytest.mark.parametrize(("preset", "size"), [("default", 48), ("light", 32)])
@pytest.mark.parametrize("shape", [(640, 427), (2000, 300), (300, 2000)])
def test_reduced_image_still_gives_every_crop_twice_the_output(preset: str, size: int, shape: tuple[int, int]) -> None:
    """Every crop ``RandomResizedCrop`` takes of the reduced image (drawn 600 times, fallbacks included) has at
    least ``HEADROOM * S`` pixels per side, and the reduction is not smaller than it needs to be."""
    from torchvision import transforms as T

    from mlcl.data.transforms import HEADROOM

    tf = build_transform(size, train=True, augment=preset, mean=[0.5] * 3, std=[0.5] * 3)
    crop = tf.steps[0]
    assert isinstance(crop, T.RandomResizedCrop) and not tf.warps
    w, h = tf.source_size(*shape)
    assert w <= shape[0] and h <= shape[1] and (w, h) != shape
    torch.manual_seed(0)
    reduced = Image.new("RGB", (w, h))
    sides = [min(T.RandomResizedCrop.get_params(reduced, crop.scale, crop.ratio)[2:]) for _ in range(600)]
    assert min(sides) >= HEADROOM * size - 1  # integer rounding of the crop sides
    # one pixel less on each side and some crop would be smaller than that (the bound is tight within 3 %)
    assert min(sides) <= HEADROOM * size * 1.03 + 1
    assert tf.source_size(32, 20) == (32, 20)  # small images are kept
