"""mAP speed: mlcl.metrics (vectorised torch) vs scikit-learn's per-class loop, on COCO-val-sized data.

Usage: PYTHONPATH=src python benchmarks/bench_metrics.py [--n 40137] [--c 80] [--pos-per-image 2.9] [--repeats 5]

Scores are float32 probabilities correlated with the labels (sigmoid of a unit Gaussian shifted by +1.5 on
positives); ``--unknown`` turns a fraction of the targets into -1 (default 0, as on COCO val). The values are
asserted equal to sklearn's (per class, 1e-12 in float64) before any timing is printed. Times are medians over
``--repeats`` runs after one warm-up, both wall-clock and process CPU time (CPU time is the steadier figure on a
shared machine; with several threads it adds up the threads' time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from mlcl.metrics import average_precision, compute_metrics, mean_average_precision


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process-CPU seconds of ``fn()`` over ``repeats`` runs (after a warm-up)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def fmt(t: tuple[float, float]) -> str:
    return f"wall {t[0] * 1e3:8.1f} ms | cpu {t[1] * 1e3:8.1f} ms"


def sklearn_map(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    aps = []
    for c in range(scores.shape[1]):
        keep = targets[:, c] != -1
        aps.append(average_precision_score(targets[keep, c], scores[keep, c]))
    aps_arr = np.asarray(aps)
    return float(aps_arr.mean()), aps_arr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40137)
    parser.add_argument("--c", type=int, default=80)
    parser.add_argument("--pos-per-image", type=float, default=2.9)
    parser.add_argument("--unknown", type=float, default=0.0, help="fraction of unknown (-1) targets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    labels = (rng.random((args.n, args.c)) < args.pos_per_image / args.c).astype(np.int64)
    logits = rng.standard_normal((args.n, args.c)) + 1.5 * labels - 1.0
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    targets = np.where(rng.random((args.n, args.c)) < args.unknown, -1, labels)
    assert (targets == 1).sum(0).min() > 0, "every class needs a positive"

    s32 = torch.from_numpy(scores)
    t = torch.from_numpy(targets)

    # equality first (float64 results, same float32 scores)
    ref_map, ref_ap = sklearn_map(scores.astype(np.float64), targets)
    ours_ap = average_precision(s32.double(), t).numpy()
    worst = float(np.abs(ours_ap - ref_ap).max())
    assert worst < 1e-12, f"per-class AP differs from sklearn by {worst}"
    ours_map = float(mean_average_precision(s32.double(), t))
    assert abs(ours_map - ref_map) < 1e-12, (ours_map, ref_map)

    print(f"data: N={args.n} C={args.c} positives/image={labels.sum() / args.n:.2f} unknown={args.unknown:.0%}")
    print(f"mAP={ours_map:.6f} (sklearn {ref_map:.6f}); max per-class |diff| = {worst:.2e}")

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default; medians of {args.repeats}"
    )
    t_sk = median_time(lambda: sklearn_map(scores, targets), args.repeats)
    print(f"sklearn per-class loop (float32 scores)            {fmt(t_sk)}")
    default_threads = torch.get_num_threads()
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        t_ours = median_time(lambda: mean_average_precision(s32, t), args.repeats)
        print(
            f"mlcl mean_average_precision, {threads} thread(s)         {fmt(t_ours)}  "
            f"speedup x{t_sk[0] / t_ours[0]:.1f} (wall), x{t_sk[1] / t_ours[1]:.1f} (cpu)"
        )
        for variant in ("voc11", "mlgcn"):
            tv = median_time(lambda v=variant: average_precision(s32, t, variant=v), args.repeats)
            print(f"    average_precision variant={variant:6s}            {fmt(tv)}")
        tr = median_time(lambda: compute_metrics(s32, t, None), args.repeats)
        print(f"    compute_metrics (full report incl. top-3)     {fmt(tr)}")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
