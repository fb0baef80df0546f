"""Missing labels on MIML (issue 3): base losses with and without CLML, frozen-feature protocol, 3 seeds.

    PYTHONPATH=src python benchmarks/bench_missing_miml.py --out runs/clml_miml  # grid + table, ~10 min on 2 cores
    PYTHONPATH=src python benchmarks/bench_missing_miml.py --lam 0.03            # skip the lambda grid
    PYTHONPATH=src python benchmarks/bench_missing_miml.py --e2e-only            # only the end-to-end check
    PYTHONPATH=src python benchmarks/bench_missing_miml.py --limit 60 --epochs 2 --seeds 0 --grid-seeds 0  # smoke

Protocol (frozen features, NOT end-to-end fine-tuning):

* Data: the seeded MIML split of ``benchmarks/miml_split.py`` (1200 train / 300 held-out images, 5 classes).
* Features: frozen ImageNet ``tf_efficientnet_lite0`` pooled 1280-d outputs (``benchmarks/_features.py``): K = 4
  augmented views per training image (``default`` augmentation, fixed seed), the plain warp-resized view for the
  held-out images. Inputs are standardised with the training set's eval-view mean/std.
* Model: a trainable neck ``Linear(1280, 512)-ReLU-Linear(512, 512)-ReLU`` whose 512-d output is the embedding
  (what CLML regularises, as the pooled embedding of the full model) followed by a linear classifier.
* Training: Adam, lr 1e-3 with a per-step cosine schedule to 0, batch 64 (last partial batch dropped), 30 epochs;
  each step uses one of the K cached views of each image, drawn at random. Losses are ``mlcl.losses.build_loss(base,
  reduction="mean")`` plus, for ``+clml``, ``mlcl.losses.CLML(tau=0.75, lam=LAM, start_epoch=1)`` on the embedding;
  ``set_epoch`` (0-based) is called on both every epoch. No model selection: the weights after the last epoch are
  scored.
* Missing labels: ``mlcl.data.missing.apply_missing(train_targets, protocol, seed)`` with the run seed, protocols
  ``single-positive`` and ``drop:0.5``; unknown entries are -1 and each base loss treats them as it documents
  (``bce``: ignored; ``bce-an``, ``hill``, ``splc``: assumed negative, SPLC also corrects them).
* Score: each (method, protocol, seed) run is scored on the 300 held-out images with their full labels
  (``mlcl.metrics.compute_metrics``: mAP non-interpolated, CF1 and OF1 at 0.5) and written as a run folder
  (``benchmarks/_runs.py``: ``config.yaml`` with ``bench.missing``, ``bench.method`` and ``train.seed``,
  ``log.jsonl``, ``metrics.json``, ``test_scores.npz``) under ``--out``. The table is ``mlcl compare``'s, grouped by
  ``bench.missing,bench.method``: mean +- sample std over seeds 0, 1, 2, and each ``+clml`` row paired by seed with
  its base under the same protocol (same missing labels, initialisation and batches).
* CLML weight: the official code adds ``lam * (sum_k max(1, ||Z_k||_*) - ||Z||_*) / N`` (lam = 1) to a base loss
  *summed* over the N*C entries; our bases average over N*C, so the same relative scale is lam = 1/(N*C)
  (1/320 at N = 64, C = 5). Unless ``--lam`` is given, LAM is chosen on a validation split carved from the
  TRAINING images only (``holdout_split(1200, 0.2, seed=0)``: 960 / 240): grid over ``--grid``, every base and
  protocol, ``--grid-seeds``; the value with the best mean validation mAP over the +clml runs is used. The held-out
  images are never used for any choice.

Results: the run folders and ``compare.html`` / ``compare.md`` in ``--out`` (the table is also printed, with the
equivalent ``mlcl compare`` command); the lambda grid in ``--grid-json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from _features import CACHE_DIR, DEFAULT_SPLIT_DIR, DEFAULT_WEIGHTS, ROOT, load_features
from _runs import compare, epoch_record, write_run
from mlcl.data.missing import apply_missing
from mlcl.data.split import holdout_split
from mlcl.losses import CLML, build_loss
from mlcl.metrics import mean_average_precision

BASES = ("bce-an", "hill", "splc")
PROTOCOLS = ("single-positive", "drop:0.5")
OFFICIAL_LAM = 1.0  # official lambda, for a base loss summed over N*C entries
TAU = 0.75  # train_clml.py --threshold
START_EPOCH = 1  # --NeEpoch
E2E_BATCH = 32  # the trainer's default batch size
NEVER = 10**9  # start_epoch that disables CLML's label correction (ablation rows)
FULL = "bce (full labels)"  # the reference row: no missing labels
NO_CORRECTION = " (no label correction)"  # suffix of the ablation rows


class NeckClassifier(nn.Module):
    """``x (B, D) -> e = relu(W2 relu(W1 x)) (B, 512) -> logits = W e + b (B, C)``; returns ``(logits, e)``."""

    def __init__(self, in_dim: int, num_classes: int, width: int = 512) -> None:
        super().__init__()
        self.neck = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.neck(x)
        return self.fc(e), e


def train_run(
    views: Tensor,
    targets: Tensor,
    *,
    base: str,
    lam: float | None,
    start_epoch: int = START_EPOCH,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
) -> tuple[NeckClassifier, list[dict[str, Any]]]:
    """Train the neck + classifier on cached views ``(N, K, D)`` with (possibly partial) targets ``(N, C)``.

    Returns the model and one ``log.jsonl`` record per epoch (mean loss, learning rate, seconds).
    """
    torch.manual_seed(seed)
    model = NeckClassifier(views.shape[-1], targets.shape[1])
    loss_fn = build_loss(base, reduction="mean")
    clml = CLML(tau=TAU, lam=lam, start_epoch=start_epoch) if lam is not None else None
    n, k = views.shape[:2]
    steps = n // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for module in (loss_fn, clml):
            if module is not None and hasattr(module, "set_epoch"):
                module.set_epoch(epoch)
        order = torch.randperm(n, generator=gen)
        pick = torch.randint(k, (n,), generator=gen)
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            x, y = views[idx, pick[idx]], targets[idx]
            logits, emb = model(x)
            loss = loss_fn(logits, y)
            if clml is not None:
                loss = loss + clml(emb, logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append(epoch_record(epoch, steps, sched.get_last_lr()[0], total, t0))
    return model, history


@torch.no_grad()
def probabilities(model: NeckClassifier, x: Tensor) -> Tensor:
    model.eval()
    return torch.sigmoid(model(x)[0])


def score(model: NeckClassifier, x: Tensor, targets: Tensor) -> float:
    return float(mean_average_precision(probabilities(model, x), targets))


def standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in others]


def lam_grid(
    views: Tensor, targets: Tensor, eval_x: Tensor, grid: list[float], seeds: list[int], kw: dict[str, Any]
) -> dict[str, Any]:
    """Validation mAP (split carved from the training images) of every base x protocol x lam (None = no CLML)."""
    tr, va = holdout_split(views.shape[0], 0.2, seed=0)
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    rows: list[dict[str, Any]] = []
    for protocol in PROTOCOLS:
        for seed in seeds:
            y = apply_missing(targets[tr_t], protocol, seed)
            for base in BASES:
                for lam in [None, *grid]:
                    m, _ = train_run(views[tr_t], y, base=base, lam=lam, seed=seed, **kw)
                    rows.append(
                        {
                            "protocol": protocol,
                            "seed": seed,
                            "base": base,
                            "lam": lam,
                            "val_mAP": score(m, eval_x[va_t], targets[va_t]),
                        }
                    )
            print(f"grid: {protocol} seed {seed} done", flush=True)
    by_lam = {str(lam): statistics.fmean(r["val_mAP"] for r in rows if r["lam"] == lam) for lam in [None, *grid]}
    best = max(grid, key=lambda lam: by_lam[str(lam)])
    return {"n_train": len(tr), "n_val": len(va), "seeds": seeds, "rows": rows, "mean_val_mAP": by_lam, "chosen": best}


def e2e_check(lam: float, epochs: int, out_root: Path, split_dir: Path, weights: Path) -> dict[str, Any]:
    """bce-an vs bce-an+clml through the real trainer at 224 px, single-positive, seed 0."""
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    res: dict[str, Any] = {}
    for name in ("bce-an", "bce-an+clml"):
        run_dir = out_root / name.replace("+", "_")
        shutil.rmtree(run_dir, ignore_errors=True)  # the trainer appends to an existing log
        t0 = time.time()
        cfg = load_config(
            None,
            [
                f"data.train={split_dir / 'train.csv'}",
                f"data.test={split_dir / 'heldout.csv'}",
                "data.image_size=224",
                "data.missing=single-positive",
                "data.mean=[0.5,0.5,0.5]",
                "data.std=[0.5,0.5,0.5]",
                "data.num_workers=2",
                "model.backbone=tf_efficientnet_lite0",
                f"model.weights={weights}",
                f"loss.name={name}",
                f"loss.clml_weight={lam}",
                "loss.clml_tau=0.75",
                "loss.clml_start_epoch=1",
                f"train.epochs={epochs}",
                f"train.batch_size={E2E_BATCH}",
                "train.seed=0",
                "train.device=cpu",
                "run.tensorboard=false",
                "run.progress=false",
                f"run.out={run_dir}",
            ],
        )
        m = fit(cfg).metrics
        res[name] = {
            "mAP": m["mAP"],
            "split": m["split"],
            "best_epoch": m["best_epoch"],
            "time_s": round(time.time() - t0, 1),
        }
        for f in run_dir.rglob("*.pt"):
            f.unlink()
        print(f"e2e {name}: heldout mAP {100 * m['mAP']:.2f} ({res[name]['time_s']} s)", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lam", type=float, default=None, help="CLML weight; default: chosen by the validation grid")
    ap.add_argument(
        "--grid", type=float, nargs="+", default=None, help="lambda grid (default: 1/(N*C) x {1, 3, 10, 30, 100, 300})"
    )
    ap.add_argument("--grid-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--split-dir", type=Path, default=DEFAULT_SPLIT_DIR)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    ap.add_argument("--limit", type=int, default=None, help="first images only (smoke test; nothing cached)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribes a shared 2-core CPU)")
    ap.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run base+clml without label correction (start_epoch never reached)",
    )
    ap.add_argument("--e2e", action="store_true", help="also run the end-to-end trainer check")
    ap.add_argument("--e2e-epochs", type=int, default=3)
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end check (lam: --lam or the grid)")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "results" / "missing_miml", help="folder of the run folders and the table"
    )
    ap.add_argument("--grid-json", type=Path, default=ROOT / "results" / "missing_miml_grid.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_start = time.time()
    if a.e2e_only:
        lam = a.lam if a.lam is not None else json.loads(a.grid_json.read_text())["chosen"]
        lam = lam * a.batch_size / E2E_BATCH  # same multiple of the official-equivalent 1/(N*C) at N = 32
        res = {"clml_lam": lam, "epochs": a.e2e_epochs, "protocol": "single-positive, seed 0, 224 px, fit()"}
        res.update(e2e_check(lam, a.e2e_epochs, ROOT / "results" / "e2e_missing", a.split_dir, a.weights))
        out = a.out / "e2e.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
        print(f"wrote {out}")
        return
    common = {
        "size": a.image_size,
        "views": a.views,
        "split_dir": a.split_dir,
        "weights": a.weights,
        "cache_dir": a.cache_dir,
        "limit": a.limit,
    }
    tr, he = load_features("train", **common), load_features("heldout", **common)
    views, eval_tr, eval_he = standardise(tr["eval_pooled"], tr["aug_pooled"], tr["eval_pooled"], he["eval_pooled"])
    y_tr, y_he = tr["targets"], he["targets"]
    n_cls = y_tr.shape[1]
    kw = {"epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr}
    official = OFFICIAL_LAM / (a.batch_size * n_cls)

    grid_info: dict[str, Any] | None = None
    lam = a.lam
    if lam is None:
        grid = a.grid or [official * f for f in (1, 3, 10, 30, 100, 300)]
        t0 = time.time()
        grid_info = lam_grid(views, y_tr, eval_tr, grid, a.grid_seeds, kw)
        grid_info["time_s"] = round(time.time() - t0, 1)
        lam = grid_info["chosen"]
        print(
            "\nCLML weight grid (validation split of the training images, mean val mAP over bases x protocols x "
            f"seeds {a.grid_seeds}):\n"
        )
        print("| lam | lam / (1/(N*C)) | mean val mAP % |\n|---|---|---|")
        for key, v in grid_info["mean_val_mAP"].items():
            rel = "no CLML" if key == "None" else f"{float(key) / official:g}"
            print(f"| {'-' if key == 'None' else f'{float(key):.4g}'} | {rel} | {100 * v:.2f} |")
        print(f"\nchosen lam = {lam:g} ({grid_info['time_s']} s)", flush=True)
        a.grid_json.parent.mkdir(parents=True, exist_ok=True)
        a.grid_json.write_text(json.dumps({**grid_info, "settings": {**kw, "views": a.views}}, indent=2))
    elif a.grid_json.is_file():  # --lam given: keep the record of an earlier grid next to the table
        grid_info = {"from": str(a.grid_json), **json.loads(a.grid_json.read_text())}
        print(f"lam = {lam:g} given; earlier grid (chosen {grid_info.get('chosen')}) read from {a.grid_json}")

    methods: list[tuple[str, str, float | None, int]] = [("bce (unknown ignored)", "bce", None, START_EPOCH)]
    for base in BASES:
        methods += [(base, base, None, START_EPOCH), (f"{base}+clml", base, lam, START_EPOCH)]
        if a.ablation:
            methods.append((f"{base}+clml{NO_CORRECTION}", base, lam, NEVER))
    settings = {
        **kw,
        "views": a.views,
        "image_size": a.image_size,
        "clml_tau": TAU,
        "clml_lam_official_equivalent": official,
        "n_train": int(y_tr.shape[0]),
        "limit": a.limit,
    }
    names, ids = list(tr["class_names"]), list(he["ids"])

    def run(p: int, protocol: str, k: int, name: str, base: str, lam_m: float | None, start: int, seed: int,
            y: Tensor) -> None:  # fmt: skip
        model, history = train_run(views, y, base=base, lam=lam_m, start_epoch=start, seed=seed, **kw)
        slug = name.replace(" ", "_").replace("(", "").replace(")", "")
        config = {
            "bench": {
                "protocol": "frozen-feature MIML (benchmarks/bench_missing_miml.py)",
                "missing": protocol,
                "method": name,
                "base": base,
                "clml_lam": lam_m,
                "clml_start_epoch": start if lam_m is not None else None,
                **settings,
            },
            "train": {"seed": seed},
        }
        write_run(
            a.out / f"p{p}-m{k:02d}-{slug}-s{seed}", config=config, history=history,
            scores=probabilities(model, eval_he), targets=y_he, class_names=names, ids=ids, train_targets=y,
            data="MIML heldout (frozen features)",
        )  # fmt: skip

    t0 = time.time()
    n_runs = 0
    for seed in a.seeds:  # full-label reference: no missing labels
        run(0, "none", 0, FULL, "bce", None, START_EPOCH, seed, y_tr)
        n_runs += 1
    for p, protocol in enumerate(PROTOCOLS, start=1):
        for seed in a.seeds:
            y = apply_missing(y_tr, protocol, seed)
            for k, (name, base, lam_m, start) in enumerate(methods, start=1):
                run(p, protocol, k, name, base, lam_m, start, seed, y)
                n_runs += 1
        print(f"done {protocol} ({time.time() - t0:.0f} s)", flush=True)
    t_table = time.time() - t0
    print(
        f"\n### MIML missing labels, frozen tf_efficientnet_lite0 features + trainable neck (heldout, seeds "
        f"{a.seeds}; CLML lam = {lam:g}, tau = {TAU}, start_epoch = {START_EPOCH})"
    )
    pairs = [(f"bench.method={base}+clml", f"bench.method={base}") for base in BASES]
    if a.ablation:
        pairs += [(f"bench.method={base}+clml{NO_CORRECTION}", f"bench.method={base}") for base in BASES]
    compare(a.out, "bench.missing,bench.method", pairs)
    print(f"\n{n_runs} runs in {t_table:.0f} s ({t_table / max(1, n_runs):.1f} s per run)")
    result: dict[str, Any] = {"settings": {**settings, "seeds": a.seeds, "clml_lam": lam}, "lam_grid": grid_info}
    if a.e2e:
        result["e2e"] = e2e_check(lam, a.e2e_epochs, ROOT / "results" / "e2e_missing", a.split_dir, a.weights)
    result["time_s"] = round(time.time() - t_start, 1)
    (a.out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
