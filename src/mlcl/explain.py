"""Attention-map pictures for ``mlcl predict --explain`` (mulcon head)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mlcl._io import atomic_write
from mlcl.data.dataset import load_image
from mlcl.inference import Predictor

__all__ = ["map_file_name", "save_attention_pngs"]


def _save_png(fig: Any, path: str) -> None:
    fig.savefig(path, format="png", bbox_inches="tight")


def map_file_name(relative: Path, label: str) -> str:
    """The picture's file name: ``a/x.jpg`` and label ``sea`` -> ``a__x.jpg__sea.png``.

    Characters other than letters, digits and ``-_.`` become ``_``.

    >>> map_file_name(Path("a/x.jpg"), "sea lion")
    'a__x.jpg__sea_lion.png'
    """

    def safe(text: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

    return "__".join(safe(part) for part in relative.parts) + "__" + safe(label) + ".png"


def save_attention_pngs(
    predictor: Predictor, files: Sequence[Path], labels: Sequence[Sequence[str]], out_dir: Path
) -> int:
    """Write one PNG for each image and each of its predicted labels, named after the image's path.

    The name is the image's path relative to the images' common folder, with ``/`` as ``__`` and the
    extension kept (``a/x.jpg`` -> ``a__x.jpg__<label>.png``), so images with the same stem in different
    folders or with different extensions never overwrite each other. Each picture is the image with the
    label's attention map (heads averaged, bilinear upsampling) overlaid, written atomically.
    Returns the number of files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = [Path(p).resolve() for p in files]
    root = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    written = 0
    for path, names in zip(resolved, labels, strict=True):
        if not names:
            continue
        probs, maps = predictor.attention_maps(str(path))
        image = load_image(str(path)).resize((predictor.image_size, predictor.image_size))
        for name in names:
            k = predictor.class_names.index(name)
            fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
            ax.imshow(np.asarray(image))
            ax.imshow(maps[k].numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            ax.set_title(f"{name}: p={float(probs[k]):.2f}", fontsize=9)
            ax.axis("off")
            target = out_dir / map_file_name(path.relative_to(root), name)
            atomic_write(target, partial(_save_png, fig))
            plt.close(fig)
            written += 1
    return written
