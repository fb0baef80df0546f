"""The data pipeline alone: decode + augment + collate, before and after reduced-scale decoding, the uint8 batch
normalisation and the decoded-image cache, on real MIML and VOC 2007 JPEGs.

Variants, each the training loader's work for a batch of ``--batch-size`` images (the ``default`` augmentation:
random resized crop, flip, colour jitter) or the evaluation loader's (warp), made in this process (images/s per
worker):

* ``before``: the pipeline as it was (full-size decode, per-image ``ToTensor`` + ``Normalize``, default collate);
* ``after, no cache``: ``data.cache=none`` (reduced-scale decode where the size allows, uint8 through the loader,
  normalisation on the batch);
* ``after, cache``: ``data.cache=auto`` (the images decoded once beforehand; its build time is printed apart).

Per worker, the rate by this process's CPU time (one thread) is the figure to read on a shared machine: the wall
clock there also counts the other jobs' time slices.

The variants run interleaved, ``--reps`` rounds of ``--batches`` batches each (medians and ratios). Then the same
loaders with ``--workers`` processes (total images/s, the first batch, the workers' start-up, not timed).

    python benchmarks/bench_data.py --reps 5              # MIML and VOC, 224 px
    python benchmarks/bench_data.py --sets voc --size 160
    python benchmarks/bench_data.py --check               # every tensor bit-identical to before?
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mlcl.data.csv_format import read_csv_labels
from mlcl.data.dataset import ImageDataset, collate_views, to_rgb
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.transforms import build_transform

MEAN, STD = [0.5] * 3, [0.5] * 3


class Before(Dataset):
    """The pipeline before this change: ``Image.open`` + full decode + ``to_rgb``, then the whole ``Compose``."""

    def __init__(self, data: MultiLabelSet, transform: Any) -> None:
        self.data, self.transform = data, transform
        self.targets = data.targets.float()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        with Image.open(self.data.items[i]) as image:
            image.load()
            rgb = to_rgb(image)
        return self.transform(rgb), self.targets[i], i


def loaders(data: MultiLabelSet, size: int, train: bool, batch: int, workers: int) -> dict[str, DataLoader]:
    """The three variants' loaders (shuffled with a fixed generator, the same order for each)."""
    tf = build_transform(size, train=train, augment="default", mean=MEAN, std=STD)
    before = Before(data, tf)
    plain = ImageDataset(data, tf, normalize_on_batch=True)
    cached = ImageDataset(data, tf, normalize_on_batch=True)
    summary = cached.cache_images(4 * 2**30)
    print(
        f"    cache ({'train' if train else 'eval'}): {summary['images']} images, {summary['bytes'] / 2**20:.0f} MiB,"
        f" built in {summary['seconds']:.1f} s ({summary['images'] / max(summary['seconds'], 1e-9):.0f} images/s)",
        flush=True,
    )

    def make(ds: Any, collate: Callable) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(ds, batch_size=batch, shuffle=True, generator=g, num_workers=workers, collate_fn=collate)

    return {
        "before": make(before, collate_views),
        "after, no cache": make(plain, plain.collate),
        "after, cache": make(cached, cached.collate),
    }


def _cycle(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def per_worker(
    units: dict[str, DataLoader], batches: int, reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Images/s of each loader made in this process, ``reps`` interleaved rounds of ``batches`` batches: by the
    wall clock, and by this process's CPU time (one thread: the work itself, what an idle core would give)."""
    iters = {k: _cycle(v) for k, v in units.items()}
    for it in iters.values():
        next(it)  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in units}
    cpu: dict[str, list[float]] = {k: [] for k in units}
    for _ in range(reps):
        for name, it in iters.items():
            t0, c0, n = time.perf_counter(), time.process_time(), 0
            for _ in range(batches):
                n += int(next(it)[0].shape[0])
            wall[name].append(n / (time.perf_counter() - t0))
            cpu[name].append(n / (time.process_time() - c0))
    return wall, cpu


def with_workers(units: dict[str, DataLoader], batches: int, reps: int) -> dict[str, list[float]]:
    """Total images/s with the loaders' worker processes: after the first batch, ``batches`` batches."""
    rates: dict[str, list[float]] = {k: [] for k in units}
    for _ in range(reps):
        for name, loader in units.items():
            it = iter(loader)
            next(it)
            t0, n = time.perf_counter(), 0
            for _ in range(batches):
                n += int(next(it)[0].shape[0])
            rates[name].append(n / (time.perf_counter() - t0))
            del it
    return rates


def print_table(title: str, rates: dict[str, list[float]]) -> None:
    base = statistics.median(rates["before"])
    print(f"\n{title}\n\n| variant | images/s (median) | min-max | vs before |\n|---|---|---|---|")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:.1f} | {min(r):.1f}-{max(r):.1f} | {med / base:.2f}x |")
    print(flush=True)


class SeededBefore(Before):
    """:class:`Before` with :class:`ImageDataset`'s per-image seeded augmentation streams (``seed``, epoch 0)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        import random

        from mlcl.data.dataset import sample_seed

        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            s = sample_seed(0, 0, i)
            torch.manual_seed(s)
            random.seed(s)
            try:
                return super().__getitem__(i)
            finally:
                random.setstate(state)


def check_equal(data: MultiLabelSet, size: int, batch: int, workers: int) -> str:
    """Whether every image's tensor (an epoch of seeded training augmentation, and the evaluation transform) is
    bit-identical before and after (with the cache); returns a one-line verdict."""
    verdicts = []
    for train in (True, False):
        tf = build_transform(size, train=train, augment="default", mean=MEAN, std=STD)
        after = ImageDataset(data, tf, seed=0, normalize_on_batch=True)
        after.cache_images(4 * 2**30)
        before = SeededBefore(data, tf)
        a = DataLoader(after, batch_size=batch, num_workers=workers, collate_fn=after.collate)
        b = DataLoader(before, batch_size=batch, num_workers=workers, collate_fn=collate_views)
        same = all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
        verdicts.append(f"{'training' if train else 'evaluation'}: {'identical' if same else 'DIFFERENT'}")
    return f"{len(data)} images, {size} px: " + ", ".join(verdicts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="miml,voc", help="comma-separated: miml, voc")
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=4, help="batches per round")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-workers-part", action="store_true", help="skip the part with worker processes")
    p.add_argument("--check", action="store_true", help="only check that every tensor is the same as before")
    a = p.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    print(f"load average before: {os.getloadavg()}; {a.size} px, batch {a.batch_size}, {a.reps} rounds")
    for name in a.sets.split(","):
        csv = a.shared / ("miml" if name == "miml" else "voc2007") / "labels.csv"
        data = read_csv_labels(csv, check_images=False)
        print(f"\n## {name}: {len(data)} JPEGs ({csv})", flush=True)
        if a.check:
            print(check_equal(data, a.size, a.batch_size, a.workers), flush=True)
            continue
        for train in (True, False):
            what = "training (default augmentation)" if train else "evaluation (warp)"
            units = loaders(data, a.size, train, a.batch_size, 0)
            wall, cpu = per_worker(units, a.batches, a.reps)
            print_table(f"**{name}, {what}, one process, CPU time** (images/s per worker, per busy core)", cpu)
            print_table(f"**{name}, {what}, one process, wall clock** (images/s per worker)", wall)
            if not a.no_workers_part and a.workers > 0:
                units = loaders(data, a.size, train, a.batch_size, a.workers)
                rates = with_workers(units, a.batches * a.workers, max(1, a.reps // 2))
                print_table(f"**{name}, {what}, {a.workers} workers** (images/s in all)", rates)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
