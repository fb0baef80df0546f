"""A training epoch from the frozen trunk's cache against a full fine-tuning epoch, on VOC 2007 at 224 px.

    python benchmarks/bench_frozen.py --voc ../shared/data/voc2007 \
        --weights ../shared/weights/tf_efficientnet_lite0.pth --rounds 2

The data: the VOC ``train`` split of ``--voc`` (2500 photos; ``mlcl train`` holds out a seeded 10 %, so 2250
train, 70 steps of 32). Every run is mlcl's own: :func:`mlcl.engine.build.build_training` of an ``mlcl train``
configuration (EfficientNet-Lite0 with the ImageNet weights, 224 px, batch 32, ``--workers`` decoding processes, the
speed options this machine resolves, BCE, a random head so that no probe runs), then
:func:`mlcl.engine.loop.train_one_epoch`, the code of a real epoch.

* **fine-tuning**: ``data.augment=default`` (crops, flip, colour jitter), every parameter trained; the epoch
  decodes and augments the JPEGs and runs forward and backward through the whole backbone.
* **frozen** protocols (``train.freeze``): the one-time cache fill (the frozen part's forward over the training
  images: its time is printed on its own) and then epochs read from the cache: ``all`` with the linear head (the
  pooled 1280-d embedding), ``all`` with the label-attention head (the 7 x 7 x 1280 map; MulCon's stage 1), and
  ``5`` (the stem and the first 5 of Lite0's 7 stages frozen: the cache holds their 112 x 14 x 14 output and the
  last two stages train with the head).

The variants take turns ``--rounds`` times (a whole fine-tuning epoch, then one epoch of each frozen protocol);
each line gives the median epoch time and the median over the rounds of the fine-tuning epoch's time divided by the
protocol's (measured in the same round, so that the machine's load cancels out). ``--ft-steps N`` truncates the
fine-tuning epochs to ``N`` steps and scales their time to the full epoch (said in the output). The machine's load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlcl.engine.build import Training, build_training
from mlcl.engine.config import load_config
from mlcl.engine.loop import train_one_epoch
from mlcl.engine.run_log import RunLog
from mlcl.engine.state import TrainState


def train_csv(voc: Path, out: Path) -> Path:
    """The VOC ``train`` split of ``voc`` as an mlcl label CSV with absolute image paths."""
    split = {row["filename"]: row["split"] for row in csv.DictReader((voc / "split.csv").open())}
    with (voc / "labels.csv").open() as f, (out / "voc_train.csv").open("w") as g:
        reader = csv.reader(f)
        writer = csv.writer(g)
        writer.writerow(next(reader))
        for row in reader:
            if split.get(row[0]) == "train":
                writer.writerow([str((voc / "images" / row[0]).resolve()), *row[1:]])
    return out / "voc_train.csv"


def build(data: Path, weights: Path, args: argparse.Namespace, extra: list[str]) -> Training:
    overrides = [
        f"data.train={data}", "model.backbone=tf_efficientnet_lite0", f"model.weights={weights}",
        f"data.image_size={args.image_size}", f"train.batch_size={args.batch_size}", "train.device=cpu",
        f"data.num_workers={args.workers}", "train.head_init=random", "train.epochs=1", "run.progress=false",
        "run.tensorboard=false", "data.check_images=false", *extra,
    ]  # fmt: skip
    return build_training(load_config(None, overrides), torch.device("cpu"), fresh=True)


def epoch_seconds(t: Training, epoch: int, steps: int | None = None) -> float:
    """Wall time of one epoch of ``t`` (``steps``: only that many steps)."""
    state = TrainState(t.cfg, t.class_names, t.model, t.ema, t.optimizer, t.scheduler, t.scaler, t.objective)
    full = t.steps_per_epoch
    if steps is not None:
        t.steps_per_epoch = min(steps, full)
    with tempfile.TemporaryDirectory() as tmp:
        log = RunLog(Path(tmp), enabled=False, tensorboard=False, progress=False)
        t0 = time.perf_counter()
        train_one_epoch(t, state, epoch, log)
        seconds = time.perf_counter() - t0
    t.steps_per_epoch = full
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voc", type=Path, default=Path("../shared/data/voc2007"))
    ap.add_argument("--weights", type=Path, default=Path("../shared/weights/tf_efficientnet_lite0.pth"))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ft-steps", type=int, default=None, help="truncate the fine-tuning epochs (scaled up)")
    ap.add_argument("--protocols", default="all,mulcon,5", help="of all (linear head), mulcon (all, attention), 5")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    known = {
        "all": ("frozen all, linear head (pooled)", ["train.freeze=all"]),
        "mulcon": ("frozen all, label-attention head (map)", ["train.freeze=all", "model.head=mulcon"]),
        "5": ("frozen 5 of 7 stages, linear head", ["train.freeze=5"]),
    }
    protocols = dict(known[p] for p in args.protocols.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        data = train_csv(args.voc, Path(tmp))
        ft = build(data, args.weights, args, ["data.augment=default"])
        steps = ft.steps_per_epoch
        print(f"VOC train split: {len(ft.data.train)} training images, {steps} steps of {args.batch_size} an epoch")
        frozen = {}
        for name, extra in protocols.items():
            t = build(data, args.weights, args, extra)
            t0 = time.perf_counter()
            t.train_set.set_epoch(0)  # fills the cache
            fill = time.perf_counter() - t0
            report = t.frozen.report()
            print(
                f"{name}: cache of {report['n_images']} x {report['shape']} float16 (and the validation images'): "
                f"{report['bytes'] / 2**20:.1f} MB, filled in {fill:.1f} s; {report['trainable_params']} trained "
                "parameters"
            )
            frozen[name] = t
        times: dict[str, list[float]] = {"fine-tuning": [], **{name: [] for name in frozen}}
        ratios: dict[str, list[float]] = {name: [] for name in frozen}
        for r in range(args.rounds):
            seconds = epoch_seconds(ft, r, args.ft_steps)
            if args.ft_steps is not None:
                seconds *= steps / min(args.ft_steps, steps)
            times["fine-tuning"].append(seconds)
            for name, t in frozen.items():
                s = epoch_seconds(t, r)
                times[name].append(s)
                ratios[name].append(seconds / s)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    scaled = f" ({args.ft_steps} steps timed, scaled to {steps})" if args.ft_steps else ""
    print(f"\n| epoch ({steps} steps of {args.batch_size}, {args.image_size} px) | median s | fine-tuning / this |")
    print("|---|---|---|")
    print(f"| full fine-tuning{scaled} | {statistics.median(times['fine-tuning']):.2f} | 1 |")
    for name in frozen:
        print(f"| {name} | {statistics.median(times[name]):.3f} | {statistics.median(ratios[name]):.0f}x |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
