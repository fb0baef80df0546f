"""One real training step, with and without CLML, in each precision: the share of CLML and AMP's effect.

Runs the library's own step (``mlcl.engine.loop.train_step``: autocast forward, the objective in float32,
scaled backward, optimiser) on random images, and prints the median step time and throughput for:
BCE alone and BCE + CLML, each in float32, bf16 autocast and fp16 autocast with a GradScaler (CUDA only).

    python benchmarks/bench_step.py --device cuda --backbone resnet101 --image-size 448 --batch-size 64
    python benchmarks/bench_step.py --device cpu --backbone resnet10t --image-size 64 --batch-size 16 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from mlcl.engine.amp import amp_settings
from mlcl.engine.loop import train_step
from mlcl.engine.objective import Objective
from mlcl.losses import CLML, AssumeNegativeBCELoss
from mlcl.models.factory import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace, *, clml: bool, amp: str) -> tuple[float, int]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.backbone, args.classes, pretrained=False).to(device)
    objective = Objective(AssumeNegativeBCELoss(), clml=CLML(lam=1.0, start_epoch=0) if clml else None).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    settings = amp_settings(amp, device)
    t = SimpleNamespace(
        device=device,
        amp=settings,
        net=model,
        model=model,
        objective=objective,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=settings.scaler),
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        cfg=SimpleNamespace(optim=SimpleNamespace(clip_grad_norm=None)),
    )
    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
    u = torch.rand(args.batch_size, args.classes, generator=g)
    targets = torch.where(u < 0.05, 1.0, torch.where(u < 0.5, 0.0, -1.0))
    index = torch.arange(args.batch_size)
    images, targets = images.to(device), targets.to(device)
    times, skipped = [], 0
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        _, skip = train_step(t, images, targets, index)  # type: ignore[arg-type]
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            skipped += int(skip)
    return statistics.median(times), skipped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    modes = ["off", "bf16", "fp16"] if args.device.startswith("cuda") else ["off", "bf16"]
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name()}")
    print(f"{args.backbone} @{args.image_size}, batch {args.batch_size}, C={args.classes}, median of {args.steps}")
    print("| precision | BCE step | BCE + CLML step | CLML's share | images/s (BCE) | fp16 steps skipped |")
    print("|---|---|---|---|---|---|")
    for amp in modes:
        base, skipped = run(args, clml=False, amp=amp)
        with_clml, skipped2 = run(args, clml=True, amp=amp)
        share = (with_clml - base) / with_clml
        print(
            f"| {amp} | {1e3 * base:.1f} ms | {1e3 * with_clml:.1f} ms | {100 * share:.1f} % | "
            f"{args.batch_size / base:.0f} | {skipped + skipped2} |"
        )


if __name__ == "__main__":
    main()
