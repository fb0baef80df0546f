"""Small learnable multi-label image sets written to disk for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["red", "green", "blue", "white"]
_COLOURS = np.array([[230, 30, 30], [30, 200, 30], [40, 60, 230], [240, 240, 240]], dtype=np.uint8)


def make_shapes_csv(root: Path, n: int = 48, size: int = 32, seed: int = 0, images_dir: bool = True) -> Path:
    """Write ``n`` images with 1-3 coloured squares (one class per colour) and a ``labels.csv``.

    Returns the path of the CSV. Images go to ``root/images/`` (``images_dir``) or beside the CSV.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / "images" if images_dir else root
    img_dir.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        labels = sorted(rng.choice(len(CLASSES), size=k, replace=False).tolist())
        canvas = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        for c in labels:
            s = int(rng.integers(size // 5, size // 3))
            y, x = rng.integers(0, size - s, size=2)
            canvas[y : y + s, x : x + s] = _COLOURS[c]
        name = f"img_{i:03d}.png"
        Image.fromarray(canvas).save(img_dir / name)
        rows.append([name] + ["1" if c in labels else "0" for c in range(len(CLASSES))])
    csv_path = root / "labels.csv"
    with open(csv_path, "w") as f:
        f.write("filename," + ",".join(CLASSES) + "\n")
        for r in rows:
            f.write(",".join(r) + "\n")
    return csv_path
