"""EXIF orientation: every path that reads an image sees the picture upright, as a viewer shows it.

The references are NumPy rotations and flips of known pixels (the EXIF 2.3 table of the eight orientations), not
PIL's ``exif_transpose``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcl.data.dataset import ImageDataset, image_size, load_image
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.transforms import build_transform
from mlcl.engine.config import Config
from mlcl.inference import Predictor, predict_files
from mlcl.models.factory import create_model

ORIENTATION = 0x0112

#: How a viewer turns the stored pixels for each EXIF orientation (EXIF 2.3, table of tag 274).
DISPLAY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored horizontally
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # mirrored vertically
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),  # turned 90 degrees counter-clockwise
}
#: The stored pixels that display as a given upright picture (each display turn's inverse).
STORE = {**DISPLAY, 6: DISPLAY[8], 8: DISPLAY[6]}


def _upright(w: int = 64, h: int = 40) -> np.ndarray:
    """A picture whose every turn and mirror differs: a gradient plus noise."""
    g = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + 2 * y) % 256], axis=-1)
    return np.clip(base + g.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def _save(pixels: np.ndarray, path: Path, orientation: int) -> Path:
    image = Image.fromarray(np.ascontiguousarray(pixels))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def _phone_jpeg(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A JPEG stored turned with Orientation=6 (as a phone held upright writes it), and its upright PNG copy."""
    jpg = _save(STORE[6](_upright()), tmp_path / "phone.jpg", 6)
    with Image.open(jpg) as im:
        stored = np.asarray(im.convert("RGB"))  # the pixels as decoded, the tag not applied
    upright = np.ascontiguousarray(DISPLAY[6](stored))
    png = tmp_path / "upright.png"
    Image.fromarray(upright).save(png)
    return jpg, png, upright


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_applied(orientation: int, tmp_path: Path) -> None:
    upright = _upright()
    path = _save(STORE[orientation](upright), tmp_path / f"o{orientation}.png", orientation)
    with Image.open(path) as im:
        assert im.getexif()[ORIENTATION] == orientation  # the tag is in the file
    got = np.asarray(load_image(str(path)))
    assert got.shape == upright.shape
    np.testing.assert_array_equal(got, upright)
    assert image_size(str(path)) == (64, 40)


def test_phone_jpeg_reads_upright(tmp_path: Path) -> None:
    jpg, _, upright = _phone_jpeg(tmp_path)
    got = np.asarray(load_image(str(jpg)))
    assert got.shape == (40, 64, 3)  # before: (64, 40, 3), the sensor's pixels
    np.testing.assert_array_equal(got, upright)


def test_phone_jpeg_gives_the_upright_tensor_in_the_dataset(tmp_path: Path) -> None:
    jpg, png, _ = _phone_jpeg(tmp_path)
    targets = torch.tensor([[1, 0], [1, 0]], dtype=torch.int8)
    data = MultiLabelSet(["a", "b"], targets, [str(jpg), str(png)], ["jpg", "png"], source="mem")
    for train in (False, True):
        tf = build_transform(32, train=train, augment="default", mean=[0.5] * 3, std=[0.5] * 3)
        for on_batch in (False, True):
            ds = ImageDataset(data, tf, seed=0, normalize_on_batch=on_batch)
            x = ds.collate([ds[0], ds[1]])[0]
            # the same seed for both images: the same crop, flip and jitter
            ds_png = ImageDataset(data.subset([1, 1]), tf, seed=0, normalize_on_batch=on_batch)
            assert torch.equal(x[0], ds_png.collate([ds_png[0]])[0][0])


def test_phone_jpeg_gives_the_upright_probabilities_in_every_predict_path(tmp_path: Path) -> None:
    jpg, png, _ = _phone_jpeg(tmp_path)
    torch.manual_seed(0)
    cfg = Config()
    cfg.data.image_size = 32
    predictor = Predictor(create_model("resnet10t", 2).eval(), cfg, ["a", "b"], torch.device("cpu"))
    want = predictor.predict([str(png)])
    for item in (str(jpg), jpg):
        assert torch.equal(predictor.predict([item]), want)
    with Image.open(jpg) as opened:  # a PIL image opened by the caller keeps its tag
        assert torch.equal(predictor.predict([opened]), want)
    [(_, probs, failed)] = list(predict_files(predictor, [jpg, png], batch_size=2))
    assert not failed and torch.equal(probs[0], probs[1]) and torch.equal(probs[1], want[0])
    data = MultiLabelSet(["a", "b"], torch.ones(2, 2, dtype=torch.int8), [str(jpg), str(png)], ["j", "p"])
    scores, _ = predictor.scores_on(data, batch_size=2)  # mlcl eval / calibrate
    assert torch.equal(scores[0], scores[1])
    # the stored pixels without the tag are another picture to the model (the checks above can fail)
    with Image.open(jpg) as im:
        sideways = Image.fromarray(np.asarray(im.convert("RGB")))
    assert not torch.equal(predictor.predict([sideways]), want)


def test_report_thumbnail_is_upright(tmp_path: Path) -> None:
    from mlcl.report.run_report import _thumbnail

    jpg, _, upright = _phone_jpeg(tmp_path)
    url = _thumbnail(str(jpg))
    assert url is not None
    thumb = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert thumb.size == (64, 40)  # before: (40, 64)
    np.testing.assert_array_equal(np.asarray(thumb.convert("RGB")), upright)


def test_reduced_scale_decoding_turns_the_needed_size(tmp_path: Path) -> None:
    """A JPEG stored 400x200 with Orientation=6 is 200x400 upright: asking for 100x200 upright pixels allows
    decoding at half scale (200x100 stored); not swapping the request would decode it in full."""
    g = np.random.default_rng(1)
    jpg = _save(g.integers(0, 256, (200, 400, 3), dtype=np.uint8), tmp_path / "wide.jpg", 6)
    seen: list[tuple[int, int]] = []

    def need(w: int, h: int) -> tuple[int, int]:
        seen.append((w, h))
        return 100, 200

    image = load_image(str(jpg), source_size=need)
    assert seen == [(200, 400)] and image.size == (100, 200)
