"""Logistic-regression probe on frozen EfficientNet-Lite0 features: the baseline a fine-tune must beat.

    python benchmarks/miml_probe.py --train runs/miml_split/train.csv --test runs/miml_split/heldout.csv \
        --weights ../shared/weights/tf_efficientnet_lite0.pth

Features: timm's pooled 1280-d output of ``tf_efficientnet_lite0`` (ImageNet weights, eval mode, 224 px
warp-resize, mean = std = 0.5). One scikit-learn ``LogisticRegression`` per class (C chosen by 5-fold
cross-validation on the training images only), scored by mAP on the test images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from mlcl.data.csv_format import read_csv_labels
from mlcl.data.dataset import ImageDataset
from mlcl.data.transforms import build_transform
from mlcl.metrics import mean_average_precision
from mlcl.models.backbone import TimmBackbone


@torch.no_grad()
def features(csv: Path, net: TimmBackbone, size: int) -> tuple[np.ndarray, np.ndarray]:
    data = read_csv_labels(csv)
    tf = build_transform(size, train=False, mean=[0.5] * 3, std=[0.5] * 3)
    loader = torch.utils.data.DataLoader(ImageDataset(data, tf), batch_size=50, num_workers=2)
    feats = [net.pool(net(x)) for x, _, _ in loader]
    return torch.cat(feats).numpy(), data.targets.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=Path("../shared/weights/tf_efficientnet_lite0.pth"))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    net = TimmBackbone("tf_efficientnet_lite0", weights=str(a.weights)).eval()
    xtr, ytr = features(a.train, net, a.image_size)
    xte, yte = features(a.test, net, a.image_size)
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    scores = np.zeros(yte.shape, dtype=np.float64)
    for c in range(ytr.shape[1]):
        clf = LogisticRegressionCV(
            Cs=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0], cv=5, max_iter=3000, scoring="average_precision"
        )
        clf.fit(xtr, ytr[:, c])
        scores[:, c] = clf.predict_proba(xte)[:, 1]
    ours = float(mean_average_precision(torch.from_numpy(scores), torch.from_numpy(yte)))
    sk = float(np.mean([average_precision_score(yte[:, c], scores[:, c]) for c in range(yte.shape[1])]))
    result = {"probe_mAP": ours, "sklearn_mAP": sk, "n_train": int(len(ytr)), "n_test": int(len(yte))}
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
