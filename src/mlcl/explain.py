"""Explanation pictures for ``mlcl predict --explain``: where in the image each predicted label was found.

The label-attention head (``mulcon``) shows each label's attention over the feature map
(:meth:`mlcl.inference.Predictor.attention_maps`); the linear head shows its class activation map (CAM, Zhou et al.,
CVPR 2016; :func:`mlcl.models.cam.class_activation_map`): the classifier applied at every location of the backbone's
feature map, whose average over the locations is the label's logit for a global-average-pooled backbone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mlcl._io import atomic_write
from mlcl.data.dataset import load_image
from mlcl.inference import Predictor

__all__ = ["class_maps", "map_file_name", "save_attention_pngs"]


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


def class_maps(predictor: Predictor, image: Any) -> tuple[Tensor, Tensor]:
    """One image's probabilities and per-label maps: ``(probs (C,), maps (C, S, S))``, maps scaled to [0, 1].

    ``mulcon`` head: the label attention maps (:meth:`~mlcl.inference.Predictor.attention_maps`). ``linear`` head:
    the class activation map ``CAM[c, h, w] = sum_d W[c, d] f[d, h, w] + b[c]`` of the backbone's feature map
    ``f`` ``(D, h, w)`` (before BoostLU's boost), upsampled bilinearly to the input size ``S`` and min-max scaled
    per label, as the attention maps are (a map without spread, such as that of a 1 x 1 feature map, is all 1:
    the whole image).

    Args:
        predictor: A checkpoint's :class:`~mlcl.inference.Predictor`.
        image: A path, a PIL image or a uint8 array, read as :meth:`~mlcl.inference.Predictor.predict` reads it.
    """
    model = predictor.model
    if model.head_type != "linear":
        return predictor.attention_maps(image)
    x = predictor._batch([image])
    with torch.no_grad():
        feats = model.backbone(x)
        logits = model.forward_head(feats, model.backbone.pool(feats)).logits
        cam = model.class_activation_map(feats).float()  # (1, C, h, w)
    size = (predictor.image_size, predictor.image_size)
    maps = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0]
    lo = maps.flatten(1).min(1).values[:, None, None]
    hi = maps.flatten(1).max(1).values[:, None, None]
    spread = hi - lo
    flat = spread <= 1e-6 * hi.abs().clamp_min(1e-6)  # e.g. a 1 x 1 feature map: no place stands out
    scaled = torch.where(flat, torch.ones_like(maps), (maps - lo) / spread.clamp_min(1e-12))
    return torch.sigmoid(logits[0].float()).cpu(), scaled.cpu()


def save_attention_pngs(
    predictor: Predictor, files: Sequence[Path], labels: Sequence[Sequence[str]], out_dir: Path
) -> int:
    """Write one PNG for each image and each of its predicted labels, named after the image's path.

    The name is the image's path relative to the images' common folder, with ``/`` as ``__`` and the
    extension kept (``a/x.jpg`` -> ``a__x.jpg__<label>.png``), so images with the same stem in different
    folders or with different extensions never overwrite each other. Each picture is the image with the
    label's map (:func:`class_maps`: the attention map of the mulcon head, heads averaged, or the class activation
    map of the linear head; bilinear upsampling) overlaid, written atomically.
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
        probs, maps = class_maps(predictor, str(path))
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
