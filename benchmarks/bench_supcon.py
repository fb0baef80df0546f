"""Label-level SupCon at COCO scale: gathered (P, P+F) form vs the dense (B*L)^2 masked form.

Setting (MulCon stage 2 on COCO): 32 images x 2 views = 64 rows, L = 80 labels, ~2.9 present labels per image,
128-d projections. Both versions compute the same loss (asserted); we time forward + backward of the
contrastive term alone (from normalised projections) on CPU and report peak memory two ways:

* ``profiler peak``: running sum of the allocations/frees recorded by ``torch.profiler`` (CPU allocator,
  ``profile_memory=True``) in time order, relative to the start; it sees torch tensors only (not Python
  objects), and misses transient peaks inside a single op;
* ``largest (N, N) tensor``: analytic size of one similarity-sized float32 intermediate (there are several).

Usage: ``PYTHONPATH=src python benchmarks/bench_supcon.py [--reps 20] [--threads 1] [--denominator-size 0]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from mlcl.losses.supcon import label_supcon, select_contrast_rows


def label_supcon_dense(
    z: Tensor,
    targets: Tensor,
    *,
    tau: float = 0.2,
    base_tau: float = 0.2,
    denominator_size: int = 0,
    logits: Tensor | None = None,
) -> Tensor:
    """The same loss on the full (B*L, B*L) similarity matrix with masks (the straightforward dense form)."""
    B, L, P = z.shape
    n = B * L
    zf = z.reshape(n, P).float()
    flat = targets.reshape(-1)
    present = flat == 1
    n_pos = int(present.sum())
    contrast = present.clone()
    if denominator_size > n_pos:
        sel = select_contrast_rows(targets, denominator_size=denominator_size, logits=logits)
        contrast[sel.rows[sel.num_pos :]] = True
    labels = torch.arange(n, device=z.device) % L
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = zf @ zf.T / tau
    logits_mask = contrast[None, :] & ~eye
    pos_mask = (labels[:, None] == labels[None, :]) & present[:, None] & present[None, :] & ~eye
    shifted = sim - sim.max(dim=1, keepdim=True).values.detach()
    log_prob = shifted - torch.log((torch.exp(shifted) * logits_mask).sum(1, keepdim=True).clamp_min(1e-30))
    n_p = pos_mask.sum(1)
    mean_log_prob = (pos_mask * log_prob).sum(1) / n_p.clamp_min(1)
    return -(tau / base_tau) * (mean_log_prob * present).sum() / max(n_pos, 1)


def coco_like_batch(images: int = 32, views: int = 2, num_classes: int = 80, per_image: float = 2.9, dim: int = 128):
    g = torch.Generator().manual_seed(0)
    # Labels per image ~ 1 + Poisson(per_image - 1), as in COCO (every image has >= 1 label).
    counts = (1 + torch.poisson(torch.full((images,), per_image - 1.0), generator=g)).long().clamp(max=num_classes)
    t = torch.zeros(images, num_classes)
    for i, c in enumerate(counts.tolist()):
        t[i, torch.randperm(num_classes, generator=g)[:c]] = 1
    t = t.repeat(views, 1)
    feats = F.normalize(torch.randn(images * views, num_classes, dim, generator=g), dim=-1)
    logits = torch.randn(images * views, num_classes, generator=g)
    return feats, t, logits


def fwd_bwd(fn, z: Tensor, t: Tensor, logits: Tensor, denominator_size: int) -> float:
    """Forward + backward of the contrastive term only, from already-normalised projections ``z``."""
    z = z.detach().requires_grad_(True)
    loss = fn(z, t, denominator_size=denominator_size, logits=logits)
    loss.backward()
    return loss.item()


def timed(fn, args, reps: int) -> float:
    """Median wall time of ``reps`` runs (the machine is shared: the median is less noisy than the mean)."""
    fwd_bwd(fn, *args)  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fwd_bwd(fn, *args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profiler_peak(fn, args) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fwd_bwd(fn, *args)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running, peak = 0, 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--denominator-size", type=int, default=0)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    feats, t, logits = coco_like_batch()
    rows, num_classes, dim = t.shape[0], t.shape[1], feats.shape[-1]
    sel = select_contrast_rows(t, denominator_size=opts.denominator_size, logits=logits)
    n = rows * num_classes
    m = sel.rows.numel()
    print(
        f"rows (images x views) = {rows}, L = {num_classes}, dim = {dim}, present labels P = {sel.num_pos} "
        f"({sel.num_pos / rows:.2f} per row), contrast rows = {m}, denominator_size = {opts.denominator_size}"
    )
    args = (feats, t, logits, opts.denominator_size)
    ours = fwd_bwd(label_supcon, *args)
    dense = fwd_bwd(label_supcon_dense, *args)
    assert abs(ours - dense) <= 1e-4 * max(1.0, abs(dense)), (ours, dense)
    print(f"loss: gathered {ours:.6f}  dense {dense:.6f}  |diff| {abs(ours - dense):.2e}")
    t_ours = timed(label_supcon, args, opts.reps)
    t_dense = timed(label_supcon_dense, args, max(2, opts.reps // 5))
    p_ours, p_dense = profiler_peak(label_supcon, args), profiler_peak(label_supcon_dense, args)
    mib = 1024**2
    print(f"{'version':<10}{'fwd+bwd ms':>12}{'profiler peak MiB':>20}{'largest (N,N) f32 MiB':>24}")
    print(f"{'gathered':<10}{t_ours * 1e3:>12.2f}{p_ours / mib:>20.2f}{sel.num_pos * m * 4 / mib:>24.3f}")
    print(f"{'dense':<10}{t_dense * 1e3:>12.2f}{p_dense / mib:>20.2f}{n * n * 4 / mib:>24.3f}")
    print(
        f"speed-up x{t_dense / t_ours:.1f}, profiler-peak ratio x{p_dense / max(p_ours, 1):.0f} "
        f"(threads={opts.threads}; the input z itself is {n * dim * 4 / mib:.2f} MiB)"
    )


if __name__ == "__main__":
    main()
