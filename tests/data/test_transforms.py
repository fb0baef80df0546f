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
