"""Frozen-feature cache for the MIML benchmarks (``bench_missing_miml.py``, ``bench_mulcon.py``).

The frozen-feature protocol: ImageNet ``tf_efficientnet_lite0`` (timm, local weights, eval mode, mean = std = 0.5)
is run once over the seeded MIML split (``benchmarks/miml_split.py``); the benchmarks then train only small heads
on the cached outputs, so that many runs (methods x seeds) take seconds each instead of minutes.

For each split the cache holds, at ``size`` px:

* ``eval_pooled`` ``(N, 1280)`` and ``eval_tokens`` ``(N, H*W, 1280)``: the evaluation view (warp-resize);
* for the training split only, ``aug_pooled`` ``(N, K, 1280)`` and ``aug_tokens`` ``(N, K, H*W, 1280)``: ``K``
  augmented views per image (``build_transform(train=True, augment=...)``, drawn from ``torch.manual_seed(seed)``
  in image order, single process, so the views are identical on every run);
* ``targets`` ``(N, C)`` (full labels), ``class_names`` and ``ids``.

Pooled features are timm's ``forward_head(pre_logits=True)`` (global average pooling of the final 1280-channel
map); tokens are that map flattened (``TimmBackbone.tokens``, token ``h*W + w``: 7 x 7 = 49 at 224 px). Tokens are
stored in float16 (the views of 1200 images take about 0.6 GB); pooled features in float32.

Files: ``benchmarks/results/cache/miml_<split>_<size>px_k<K>_<augment>_s<seed>.pt``. Build them explicitly with

    PYTHONPATH=src python benchmarks/_features.py --split-dir runs/miml_split \
        --weights ../shared/weights/tf_efficientnet_lite0.pth --views 4

or let the benchmarks build them on first use.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from mlcl.data.csv_format import read_csv_labels
from mlcl.data.dataset import ImageDataset
from mlcl.data.transforms import build_transform
from mlcl.models.backbone import TimmBackbone

BACKBONE = "tf_efficientnet_lite0"
MEAN = STD = (0.5, 0.5, 0.5)
ROOT = Path(__file__).resolve().parent
CACHE_DIR = ROOT / "results" / "cache"
DEFAULT_SPLIT_DIR = ROOT.parent / "runs" / "miml_split"
DEFAULT_WEIGHTS = ROOT.parent.parent / "shared" / "weights" / "tf_efficientnet_lite0.pth"


def cache_path(split: str, size: int, views: int, augment: str, seed: int, cache_dir: Path = CACHE_DIR) -> Path:
    """Where the features of ``split`` (``train`` or ``heldout``) are cached."""
    k = views if split == "train" else 0
    return cache_dir / f"miml_{split}_{size}px_k{k}_{augment}_s{seed}.pt"


@torch.no_grad()
def _run(net: TimmBackbone, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats = net(images)
    tokens, _ = net.tokens(feats)
    return net.pool(feats).float(), tokens.to(torch.float16)


@torch.no_grad()
def extract(
    csv: Path,
    net: TimmBackbone,
    *,
    size: int,
    views: int,
    augment: str,
    seed: int,
    batch_size: int = 50,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the frozen backbone over the images of ``csv`` (see the module docstring for the contents)."""
    data = read_csv_labels(csv)
    if limit is not None:
        data = data.subset(list(range(min(limit, len(data)))))
    eval_tf = build_transform(size, train=False, mean=MEAN, std=STD)
    out: dict[str, Any] = {
        "targets": data.targets.clone(),
        "class_names": list(data.class_names),
        "ids": [str(i) for i in data.ids],
        "size": size,
        "views": views,
        "augment": augment,
        "seed": seed,
        "backbone": BACKBONE,
    }
    loader = torch.utils.data.DataLoader(ImageDataset(data, eval_tf), batch_size=batch_size, num_workers=0)
    pooled, tokens = zip(*(_run(net, x) for x, _, _ in loader), strict=True)
    out["eval_pooled"], out["eval_tokens"] = torch.cat(pooled), torch.cat(tokens)
    if views > 0:
        torch.manual_seed(seed)
        train_tf = build_transform(size, train=True, augment=augment, mean=MEAN, std=STD)
        ds = ImageDataset(data, train_tf, views=views)
        loader = torch.utils.data.DataLoader(ds, batch_size=max(1, batch_size // views), num_workers=0)
        pooled, tokens = [], []
        for x, _, _ in loader:  # x: (B, K, 3, S, S)
            b = x.shape[0]
            p, t = _run(net, x.flatten(0, 1))
            pooled.append(p.reshape(b, views, -1))
            tokens.append(t.reshape(b, views, *t.shape[1:]))
        out["aug_pooled"], out["aug_tokens"] = torch.cat(pooled), torch.cat(tokens)
    return out


def load_features(
    split: str,
    *,
    size: int = 224,
    views: int = 4,
    augment: str = "default",
    seed: int = 0,
    split_dir: Path = DEFAULT_SPLIT_DIR,
    weights: Path = DEFAULT_WEIGHTS,
    cache_dir: Path = CACHE_DIR,
    limit: int | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """The cached features of ``split`` (``train``: eval view + ``views`` augmented views; ``heldout``: eval view).

    Extracts and writes the cache on first use. ``limit`` (first images only, not cached) is for smoke tests.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"`split` must be 'train' or 'heldout', got {split!r}")
    k = views if split == "train" else 0
    path = cache_path(split, size, views, augment, seed, cache_dir)
    if limit is None and path.is_file():
        return torch.load(path, map_location="cpu", weights_only=False)
    csv = Path(split_dir) / f"{split}.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv} not found: run `python benchmarks/miml_split.py --out {split_dir}` first")
    t0 = time.time()
    net = TimmBackbone(BACKBONE, weights=str(weights)).eval()
    feats = extract(csv, net, size=size, views=k, augment=augment, seed=seed, limit=limit)
    feats["extract_s"] = round(time.time() - t0, 1)
    if verbose:
        n = feats["targets"].shape[0]
        print(f"extracted {split}: {n} images, {k} augmented views, {feats['extract_s']} s")
    if limit is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(feats, path)
    return feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split-dir", type=Path, default=DEFAULT_SPLIT_DIR)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--augment", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribes a shared 2-core CPU)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for split in ("train", "heldout"):
        f = load_features(
            split,
            size=a.image_size,
            views=a.views,
            augment=a.augment,
            seed=a.seed,
            split_dir=a.split_dir,
            weights=a.weights,
        )
        shapes = {k: tuple(v.shape) for k, v in f.items() if isinstance(v, torch.Tensor)}
        print(split, shapes)


if __name__ == "__main__":
    main()
