"""Attention-map pictures for ``mlcl predict --explain`` (mulcon head)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlcl.data.dataset import load_image
from mlcl.inference import Predictor

__all__ = ["save_attention_pngs"]


def save_attention_pngs(
    predictor: Predictor, files: Sequence[Path], labels: Sequence[Sequence[str]], out_dir: Path
) -> int:
    """Write ``<stem>_<label>.png`` for each image and each of its predicted labels.

    Each picture is the image with the label's attention map (heads averaged, bilinear upsampling) overlaid.
    Returns the number of files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for path, names in zip(files, labels, strict=True):
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
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
            fig.savefig(out_dir / f"{Path(path).stem}_{safe}.png", bbox_inches="tight")
            plt.close(fig)
            written += 1
    return written
