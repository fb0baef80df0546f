"""`predict --explain` pictures: one per image and label, never overwritten by an image of the same stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlcl.engine.config import Config
from mlcl.explain import save_attention_pngs
from mlcl.inference import Predictor
from mlcl.models.factory import create_model


def test_images_with_the_same_stem_get_their_own_pictures(tmp_path: Path) -> None:
    model = create_model("resnet10t", 2, head="mulcon", head_dim=16, head_heads=2, head_num_sab=0)
    cfg = Config()
    cfg.data.image_size = 32
    predictor = Predictor(model, cfg, ["sea", "sky"], torch.device("cpu"))
    rng = np.random.default_rng(0)
    files = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "x.png"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(f)
    labels = [["sea", "sky"]] * 3
    n = save_attention_pngs(predictor, files, labels, tmp_path / "maps")
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert n == 6 and len(written) == 6, written  # before: 2 (every x.* wrote x_sea.png and x_sky.png)
    assert "a__x.jpg__sea.png" in written and "b__x.jpg__sea.png" in written and "x.png__sky.png" in written
    assert all(Image.open(tmp_path / "maps" / name).size[0] > 0 for name in written)
