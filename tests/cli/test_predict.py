"""``mlcl predict``: unreadable images are warnings with a documented exit status; --explain for the linear head."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mlcl.cli import main

CPU = ["--device", "cpu", "--workers", "0"]


def test_unreadable_images_are_one_warning_each_and_exit_1(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, run = tiny_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted((csv_path.parent / "images").glob("*.png"))[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run), str(folder), "--out", str(out), *CPU])
    assert e.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("mlcl: warning: ") and "broken.png" in err[0] and err[0].endswith("skipped"), err
    assert err[1] == "mlcl: warning: 1 of 4 image(s) could not be read and were skipped (exit status 1)", err
    assert not any(line.startswith("mlcl: error") for line in err)
    rows = list(csv.reader(out.open()))[1:]
    assert sorted(Path(r[0]).name for r in rows) == sorted(p.name for p in folder.glob("img_*.png"))


def test_explain_is_accepted_for_the_linear_head(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:

    csv_path, run = tiny_run
    images = sorted((csv_path.parent / "images").glob("*.png"))[:2]
    out = tmp_path / "maps"
    argv = ["predict", str(run), *map(str, images), "--top-k", "2", "--explain", str(out), *CPU]
    assert main(argv) == 0
    assert len(list(out.glob("*.png"))) == 4  # two labels of each image
    assert "4 explanation maps written" in capsys.readouterr().out


def test_class_maps_of_the_linear_head_match_an_independent_cam(tmp_path: Path) -> None:
    """At 96 px (a 3 x 3 feature map): the map is the classifier at every location, upsampled and scaled."""
    import numpy as np
    from PIL import Image

    from mlcl.engine.config import Config
    from mlcl.explain import class_maps
    from mlcl.inference import Predictor
    from mlcl.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet10t", 3).eval()
    cfg = Config()
    cfg.data.image_size, cfg.data.mean, cfg.data.std = 96, [0.5] * 3, [0.25] * 3
    pred = Predictor(model, cfg, ["a", "b", "c"], torch.device("cpu"))
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(image)
    probs, maps = class_maps(pred, str(image))

    # independent: the unfolded model in float64, its feature map and fc applied at every location
    ref_model = create_model("resnet10t", 3).double().eval()
    ref_model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    x = pred._batch([str(image)]).double().contiguous()
    with torch.no_grad():
        fmap = ref_model.backbone.model.forward_features(x)[0]  # (D, 3, 3)
        cam = torch.einsum("dhw,cd->chw", fmap, ref_model.fc.weight) + ref_model.fc.bias[:, None, None]
        logits = ref_model(x).logits[0]
    assert fmap.shape[1:] == (3, 3)
    assert torch.allclose(cam.mean((1, 2)), logits, atol=1e-9)  # the CAM averages to the logit (average pooling)
    ref = F.interpolate(cam[None], size=(96, 96), mode="bilinear", align_corners=False)[0]
    lo, hi = ref.flatten(1).min(1).values[:, None, None], ref.flatten(1).max(1).values[:, None, None]
    assert maps.shape == (3, 96, 96) and torch.allclose(probs.double(), torch.sigmoid(logits), atol=1e-5)
    assert torch.allclose(maps.double(), (ref - lo) / (hi - lo), atol=1e-3)
