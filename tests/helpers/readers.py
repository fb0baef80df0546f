"""Shared pieces of the reader tests: independent class lists and fixture-writing helpers."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mlcl.data.labelset import MultiLabelSet

# Independent copies of the standard class lists, typed here from the public datasets' documentation.
VOC20 = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
# Query2Label's hard-coded NUS-WIDE order (label2index in its nuswide loader), i.e. NOT alphabetical.
NUS_Q2L_ORDER = [
    "clouds",
    "sky",
    "person",
    "street",
    "window",
    "tattoo",
    "wedding",
    "animal",
    "cat",
    "buildings",
    "tree",
    "airport",
    "plane",
    "water",
    "grass",
    "cars",
    "road",
    "snow",
    "sunset",
    "railroad",
    "train",
    "flowers",
    "plants",
    "house",
    "military",
    "horses",
    "nighttime",
    "lake",
    "rocks",
    "waterfall",
    "sun",
    "vehicle",
    "sports",
    "reflection",
    "temple",
    "statue",
    "ocean",
    "town",
    "beach",
    "tower",
    "toy",
    "book",
    "bridge",
    "fire",
    "mountain",
    "rainbow",
    "garden",
    "police",
    "coral",
    "fox",
    "sign",
    "dog",
    "cityscape",
    "sand",
    "dancing",
    "leaf",
    "tiger",
    "moon",
    "birds",
    "food",
    "cow",
    "valley",
    "fish",
    "harbor",
    "bear",
    "castle",
    "boats",
    "running",
    "glacier",
    "swimmers",
    "elk",
    "frost",
    "protest",
    "soccer",
    "flags",
    "zebra",
    "surf",
    "whales",
    "computer",
    "earthquake",
    "map",
]


def tiny_image(value: int = 10) -> bytes:
    """The bytes of a valid 2x2 PNG of grey ``value`` (distinct values give distinct bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


#: A valid 2x2 image (the readers' up-front check decodes the files; the name's suffix does not matter to PIL).
TINY_IMAGE = tiny_image()


def touch(path: Path, content: bytes = TINY_IMAGE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def rows(ls: MultiLabelSet) -> dict[str, list[int]]:
    return {i: t.tolist() for i, t in zip(ls.ids, ls.targets, strict=True)}
