"""mAP speed: mlcl.metrics (vectorised torch) vs scikit-learn's per-class loop, on COCO-val-sized data.

Usage: PYTHONPATH=src python benchmarks/bench_metrics.py [--n 40137] [--c 80] [--pos-per-image 2.9] [--repeats 5]

Scores are probabilities correlated with the labels (sigmoid of a unit Gaussian shifted by +1.5 on positives),
computed in float64 (values float32 cannot hold: mlcl ranks them on int64 keys) and cast to float32 (int32 keys);
``--unknown`` turns a fraction of the targets into -1 (default 0, as on COCO val). For each dtype the values are
asserted equal to sklearn's on the same scores (per class and mAP, 1e-12 in float64) before any timing is printed.
The first table times scikit-learn's per-class loop and mlcl's mAP on both dtypes interleaved (one round runs
each once, ``--repeats`` rounds after one warm-up), medians of wall-clock and process CPU time (CPU time is the
steadier figure on a shared machine; with several threads it adds up the threads' time).

The last section times the same mAP idle and with ``--burners`` competing CPU-burning processes (started by the
benchmark), interleaved (idle, loaded, idle, loaded... ``--repeats`` rounds), medians: scikit-learn's per-class
loop, mlcl as shipped (one intra-op thread inside the metric functions) and mlcl's kernel on torch's default
thread pool (what the functions did before they chose their threads).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score

import mlcl.metrics.functional as mf
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


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall-clock and process-CPU seconds of each ``fn``, run in turn each round (after one warm-up each)."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def comparison_sort_map(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mAP with float64 scores ranked by a comparison sort: mlcl's path before the int64 radix keys.

    It is still the path of short columns; raising the radix threshold above ``N`` selects it for one call.
    """
    threshold = mf._RADIX_MIN_ROWS
    mf._RADIX_MIN_ROWS = scores.shape[0] + 1
    try:
        return mean_average_precision(scores, targets)
    finally:
        mf._RADIX_MIN_ROWS = threshold


def fmt(t: tuple[float, float]) -> str:
    return f"wall {t[0] * 1e3:8.1f} ms | cpu {t[1] * 1e3:8.1f} ms"


def sklearn_map(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    aps = []
    for c in range(scores.shape[1]):
        keep = targets[:, c] != -1
        aps.append(average_precision_score(targets[keep, c], scores[keep, c]))
    aps_arr = np.asarray(aps)
    return float(aps_arr.mean()), aps_arr


def _burn() -> None:
    while True:
        sum(range(10_000))


def idle_and_loaded(
    fns: dict[str, Callable[[], object]], repeats: int, burners: int
) -> dict[str, dict[str, list[float]]]:
    """Wall-clock seconds of each ``fn``, idle and with ``burners`` CPU-burning processes, interleaved by round."""
    times: dict[str, dict[str, list[float]]] = {name: {"idle": [], "loaded": []} for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for condition in ("idle", "loaded"):
            procs = [mp.Process(target=_burn, daemon=True) for _ in range(burners if condition == "loaded" else 0)]
            for proc in procs:
                proc.start()
            if procs:
                time.sleep(0.2)  # let them reach full speed
            try:
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name][condition].append(time.perf_counter() - t0)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40137)
    parser.add_argument("--c", type=int, default=80)
    parser.add_argument("--pos-per-image", type=float, default=2.9)
    parser.add_argument("--unknown", type=float, default=0.0, help="fraction of unknown (-1) targets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--burners", type=int, default=1, help="CPU-burning processes of the loaded case")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    labels = (rng.random((args.n, args.c)) < args.pos_per_image / args.c).astype(np.int64)
    logits = rng.standard_normal((args.n, args.c)) + 1.5 * labels - 1.0
    scores64 = 1.0 / (1.0 + np.exp(-logits))
    scores = scores64.astype(np.float32)
    targets = np.where(rng.random((args.n, args.c)) < args.unknown, -1, labels)
    assert (targets == 1).sum(0).min() > 0, "every class needs a positive"

    s32, s64 = torch.from_numpy(scores), torch.from_numpy(scores64)
    assert not torch.equal(s64.float().double(), s64), "the float64 scores must be beyond float32"
    t = torch.from_numpy(targets)

    # equality first, per dtype: sklearn on the same scores (float64 results)
    print(f"data: N={args.n} C={args.c} positives/image={labels.sum() / args.n:.2f} unknown={args.unknown:.0%}")
    for label, ours_scores, ref_scores in (("float32", s32.double(), scores), ("float64", s64, scores64)):
        ref_map, ref_ap = sklearn_map(ref_scores.astype(np.float64), targets)
        worst = float(np.abs(average_precision(ours_scores, t).numpy() - ref_ap).max())
        assert worst < 1e-12, f"{label}: per-class AP differs from sklearn by {worst}"
        ours_map = float(mean_average_precision(ours_scores, t))
        assert abs(ours_map - ref_map) < 1e-12, (label, ours_map, ref_map)
        print(f"{label} scores: mAP={ours_map:.6f} (sklearn {ref_map:.6f}); max per-class |diff| = {worst:.2e}")

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default; "
        f"interleaved, medians of {args.repeats} rounds"
    )
    main_fns: dict[str, Callable[[], object]] = {
        "sklearn per-class loop, float32 scores": lambda: sklearn_map(scores, targets),
        "mlcl mean_average_precision, float32 scores": lambda: mean_average_precision(s32, t),
        "sklearn per-class loop, float64 scores": lambda: sklearn_map(scores64, targets),
        "mlcl mean_average_precision, float64 scores": lambda: mean_average_precision(s64, t),
        "comparison sort, float64 scores": lambda: comparison_sort_map(s64, t),
    }
    main_times = interleaved_times(main_fns, args.repeats)
    for dtype in ("float32", "float64"):
        t_sk = main_times[f"sklearn per-class loop, {dtype} scores"]
        t_ours = main_times[f"mlcl mean_average_precision, {dtype} scores"]
        print(f"sklearn per-class loop ({dtype} scores)            {fmt(t_sk)}")
        print(
            f"mlcl mean_average_precision ({dtype}, one thread) {fmt(t_ours)}  "
            f"speedup x{t_sk[0] / t_ours[0]:.1f} (wall), x{t_sk[1] / t_ours[1]:.1f} (cpu)"
        )
    t_sk, t_cmp = main_times["sklearn per-class loop, float64 scores"], main_times["comparison sort, float64 scores"]
    print(
        f"    float64 by comparison sort (the path before)  {fmt(t_cmp)}  "
        f"speedup x{t_sk[0] / t_cmp[0]:.1f} (wall), x{t_sk[1] / t_cmp[1]:.1f} (cpu)"
    )
    assert abs(float(comparison_sort_map(s64, t)) - float(mean_average_precision(s64, t))) < 1e-12
    default_threads = torch.get_num_threads()
    for variant in ("voc11", "mlgcn"):
        tv = median_time(lambda v=variant: average_precision(s32, t, variant=v), args.repeats)
        print(f"    average_precision variant={variant:6s} (float32)  {fmt(tv)}")
    tr = median_time(lambda: compute_metrics(s32, t, None), args.repeats)
    print(f"    compute_metrics (full report incl. top-3)     {fmt(tr)}")

    pool_map = mean_average_precision.__wrapped__  # type: ignore[attr-defined]  # the kernel, threads as set
    fns: dict[str, Callable[[], object]] = {
        "sklearn per-class loop": lambda: sklearn_map(scores, targets),
        "mlcl (one thread inside)": lambda: mean_average_precision(s32, t),
        f"mlcl kernel on {default_threads} threads": lambda: pool_map(s32, t),
    }
    print(
        f"\nmAP idle vs loaded ({args.burners} CPU-burning process(es) started by the benchmark), interleaved, "
        f"medians of {args.repeats} rounds, wall-clock:"
    )
    times = idle_and_loaded(fns, args.repeats, args.burners)
    for name, by in times.items():
        idle, loaded = statistics.median(by["idle"]), statistics.median(by["loaded"])
        print(f"    {name:<28} idle {idle * 1e3:8.1f} ms | loaded {loaded * 1e3:8.1f} ms  (x{loaded / idle:.1f})")


if __name__ == "__main__":
    main()
