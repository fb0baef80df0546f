"""Images per second of `mlcl predict` (PyTorch and ONNX Runtime) against the bare forward pass.

python benchmarks/bench_predict.py --images ../shared/data/miml/images --n 256 --batch-size 32 --workers 2

The three rows use the same model (tf_efficientnet_lite0, 224 px, linear head, 5 classes) and batch size:

* forward torch / onnx (pre-decoded): forward passes on tensors decoded beforehand: the machine's limit;
* mlcl predict, torch: the code path of `mlcl predict CHECKPOINT` (DataLoader decoding with workers + forward);
* mlcl predict, onnx: the same with the exported ONNX model on onnxruntime (CPUExecutionProvider).

Images are read in place. Weights: --weights PATH (timm state dict), else random (throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from mlcl import create_model
from mlcl.data.dataset import load_image
from mlcl.engine.config import Config
from mlcl.export import export_checkpoint
from mlcl.inference import OnnxPredictor, Predictor, find_images, predict_files

p = argparse.ArgumentParser()
p.add_argument("--images", default="../shared/data/miml/images")
p.add_argument("--weights", default="../shared/weights/tf_efficientnet_lite0.pth")
p.add_argument("--n", type=int, default=256)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--workers", type=int, default=2)
p.add_argument("--size", type=int, default=224)
args = p.parse_args()

files = find_images([args.images])[: args.n]
weights = args.weights if Path(args.weights).is_file() else None
model = create_model("tf_efficientnet_lite0", 5, weights=weights).eval()
cfg = Config()
cfg.model.backbone = "tf_efficientnet_lite0"
cfg.data.image_size = args.size
cfg.data.mean, cfg.data.std = [0.5] * 3, [0.5] * 3
names = [f"c{i}" for i in range(5)]
pred = Predictor(model, cfg, names, torch.device("cpu"))


def run_predict(predictor: object) -> float:
    t0 = time.perf_counter()
    n = 0
    for idx, _probs, errs in predict_files(predictor, files, batch_size=args.batch_size, workers=args.workers):
        n += len(idx) + len(errs)
    return n / (time.perf_counter() - t0)


# the bare forward on pre-decoded tensors
x = torch.stack([pred.transform(load_image(str(f))) for f in files])
with torch.no_grad():
    model(x[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch_size):
        model(x[i : i + args.batch_size])
    bare = len(x) / (time.perf_counter() - t0)

with tempfile.TemporaryDirectory() as tmp:
    from mlcl.engine.checkpoint import save_checkpoint
    from mlcl.engine.config import config_to_dict

    ckpt = os.path.join(tmp, "best.pt")
    state = {"version": "bench", "config": config_to_dict(cfg), "class_names": names, "model_class": "x"}
    save_checkpoint(ckpt, {**state, "model": model.state_dict(), "eval_weights": "model"})
    export_checkpoint(ckpt, os.path.join(tmp, "m.onnx"), fmt="onnx")
    onnx_pred = OnnxPredictor(os.path.join(tmp, "m.onnx"))
    onnx_pred.predict_tensor(x[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch_size):
        onnx_pred.predict_tensor(x[i : i + args.batch_size])
    bare_onnx = len(x) / (time.perf_counter() - t0)
    torch_rate = run_predict(pred)
    onnx_rate = run_predict(onnx_pred)

print(
    f"{len(files)} images, {args.size} px, batch {args.batch_size}, workers {args.workers}, "
    f"torch threads {torch.get_num_threads()}, weights {'file' if weights else 'random'}"
)
print(f"{'forward torch (pre-decoded)':<28}{bare:>8.1f} img/s")
print(f"{'forward onnx (pre-decoded)':<28}{bare_onnx:>8.1f} img/s")
print(f"{'mlcl predict, torch':<28}{torch_rate:>8.1f} img/s")
print(f"{'mlcl predict, onnx':<28}{onnx_rate:>8.1f} img/s")
