"""Every image mode PIL opens becomes the right 8-bit RGB image (checked against NumPy references)."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcl.data.dataset import ImageDataset, load_image, to_rgb
from mlcl.data.labelset import MultiLabelSet


def rgb_of(path: Path) -> np.ndarray:
    image = load_image(str(path))
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


def grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey.astype(np.int64)[..., None], 3, axis=2)


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.int64)


@pytest.mark.parametrize("suffix", ["png", "tiff"])
def test_16bit_grey_gradient_is_not_white(tmp_path: Path, suffix: str) -> None:
    ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / f"g.{suffix}")
    got = rgb_of(tmp_path / f"g.{suffix}")
    np.testing.assert_array_equal(got, grey3(ramp // 256))
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) > 50


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    ramp = (np.arange(16, dtype=np.uint16) * 4369).reshape(4, 4)  # 0 .. 65535
    Image.frombytes("I;16B", (4, 4), ramp.astype(">u2").tobytes()).save(tmp_path / "b.tiff")
    np.testing.assert_array_equal(rgb_of(tmp_path / "b.tiff"), grey3(ramp // 256))


def test_32bit_int_in_16bit_range_and_beyond(tmp_path: Path) -> None:
    small = (np.arange(16, dtype=np.int32) * 4000).reshape(4, 4)
    Image.fromarray(small, mode="I").save(tmp_path / "s.tiff")
    np.testing.assert_array_equal(rgb_of(tmp_path / "s.tiff"), grey3(small // 256))
    wide = (np.arange(16, dtype=np.int32) * 1_000_000 - 3_000_000).reshape(4, 4)
    Image.fromarray(wide, mode="I").save(tmp_path / "w.tiff")
    expected = np.rint((wide - wide.min()) / (wide.max() - wide.min()) * 255.0)
    np.testing.assert_array_equal(rgb_of(tmp_path / "w.tiff"), grey3(expected))


def test_float_unit_range_and_other_range(tmp_path: Path) -> None:
    unit = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(unit, mode="F").save(tmp_path / "u.tiff")
    np.testing.assert_array_equal(rgb_of(tmp_path / "u.tiff"), grey3(np.rint(unit.astype(np.float64) * 255.0)))
    other = np.linspace(-5.0, 20.0, 16, dtype=np.float32).reshape(4, 4)
    other[0, 0] = np.nan  # counts as the minimum
    Image.fromarray(other, mode="F").save(tmp_path / "o.tiff")
    ref = other.astype(np.float64)
    lo, hi = np.nanmin(ref), np.nanmax(ref)
    ref[0, 0] = lo
    np.testing.assert_array_equal(rgb_of(tmp_path / "o.tiff"), grey3(np.rint((ref - lo) / (hi - lo) * 255.0)))


def test_bilevel_grey_and_palette(tmp_path: Path) -> None:
    bits = np.arange(16).reshape(4, 4) % 3 == 0
    Image.fromarray(bits).save(tmp_path / "one.png")
    np.testing.assert_array_equal(rgb_of(tmp_path / "one.png"), grey3(bits * 255))
    grey = (np.arange(16, dtype=np.uint8) * 17).reshape(4, 4)
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(rgb_of(tmp_path / "l.png"), grey3(grey))
    palette = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 30]], dtype=np.uint8)
    index = (np.arange(16, dtype=np.uint8) % 3).reshape(4, 4)
    p = Image.fromarray(index, mode="P")
    p.putpalette(palette.ravel().tolist())
    p.save(tmp_path / "p.png")
    np.testing.assert_array_equal(rgb_of(tmp_path / "p.png"), palette[index].astype(np.int64))


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    rgba = g.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    got = rgb_of(tmp_path / "rgba.png")
    assert np.abs(got - on_white(rgba[..., :3], rgba[..., 3])).max() <= 1
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == rgba[0, 1, :3].tolist()
    la = g.integers(0, 256, size=(5, 6, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    got = rgb_of(tmp_path / "la.png")
    assert np.abs(got - on_white(np.repeat(la[..., :1], 3, axis=2), la[..., 1])).max() <= 1


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette = np.array([[255, 0, 0], [0, 0, 255], [0, 0, 0]], dtype=np.uint8)
    index = (np.arange(16, dtype=np.uint8) % 3).reshape(4, 4)
    p = Image.fromarray(index, mode="P")
    p.putpalette(palette.ravel().tolist())
    p.save(tmp_path / "t.png", transparency=2)  # index 2 (black) fully transparent
    expected = palette[index].astype(np.int64)
    expected[index == 2] = 255
    np.testing.assert_array_equal(rgb_of(tmp_path / "t.png"), expected)
    alpha = (np.arange(16, dtype=np.uint8) * 17).reshape(4, 4)
    pa = Image.frombytes("PA", (4, 4), np.stack([index, alpha], axis=2).tobytes())
    pa.putpalette(palette.ravel().tolist())
    pa.save(tmp_path / "pa.tiff")
    assert Image.open(tmp_path / "pa.tiff").mode == "PA"
    got = rgb_of(tmp_path / "pa.tiff")
    assert np.abs(got - on_white(palette[index], alpha)).max() <= 1


def test_cmyk_ycbcr_lab_hsv(tmp_path: Path) -> None:
    g = np.random.default_rng(1)
    cmyk = g.integers(0, 256, size=(4, 5, 4), dtype=np.uint8)
    Image.frombytes("CMYK", (5, 4), cmyk.tobytes()).save(tmp_path / "c.tiff")
    k = cmyk[..., 3:4].astype(np.float64)
    ref = (255.0 - cmyk[..., :3]) * (255.0 - k) / 255.0
    assert np.abs(rgb_of(tmp_path / "c.tiff") - ref).max() <= 1

    ycc = g.integers(16, 240, size=(4, 5, 3), dtype=np.uint8)
    Image.frombytes("YCbCr", (5, 4), ycc.tobytes()).save(tmp_path / "y.tiff")
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    ref = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], axis=2
    )
    assert np.abs(rgb_of(tmp_path / "y.tiff") - np.clip(ref, 0, 255)).max() <= 2

    lightness = np.linspace(0, 255, 20).astype(np.uint8).reshape(4, 5)  # neutral greys: a = b = 0
    lab = np.stack([lightness, np.zeros_like(lightness), np.zeros_like(lightness)], axis=2)
    Image.frombytes("LAB", (5, 4), lab.tobytes()).save(tmp_path / "lab.tiff")
    big_l = lightness.astype(np.float64) * 100.0 / 255.0
    lum = np.where(big_l > 8.0, ((big_l + 16.0) / 116.0) ** 3, big_l / 903.3)
    srgb = np.where(lum <= 0.0031308, 12.92 * lum, 1.055 * lum ** (1 / 2.4) - 0.055) * 255.0
    assert np.abs(rgb_of(tmp_path / "lab.tiff") - grey3(np.rint(srgb))).max() <= 3

    hsv = g.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)  # no file format stores HSV: in memory
    got = np.asarray(to_rgb(Image.frombytes("HSV", (5, 4), hsv.tobytes()))).astype(np.int64)
    ref = np.array([[colorsys.hsv_to_rgb(*(px / 255.0)) for px in row] for row in hsv.astype(np.float64)]) * 255.0
    assert np.abs(got - ref).max() <= 1


def test_dataset_and_default_transform_see_the_16bit_gradient(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 16).astype(np.uint16).reshape(4, 4)
    Image.fromarray(ramp).save(tmp_path / "g.png")
    s = MultiLabelSet(["x"], torch.tensor([[1]]), [str(tmp_path / "g.png")], ["g.png"])
    image = ImageDataset(s)[0][0]
    np.testing.assert_allclose(image[0].numpy(), (ramp // 256) / 255.0, atol=1e-6)
