"""MulCon vs its baselines (issue 4): linear head, label-attention head, MulCon stage 2, image-level SupCon.

    PYTHONPATH=src python benchmarks/bench_mulcon.py miml --out runs/mulcon_miml        # frozen features, ~15 min
    PYTHONPATH=src python benchmarks/bench_mulcon.py builtin --out runs/mulcon_builtin  # end to end, ~50 min
    PYTHONPATH=src python benchmarks/bench_mulcon.py miml --limit 60 --stage1-epochs 1 --stage2-epochs 1 --seeds 0
    PYTHONPATH=src python benchmarks/bench_mulcon.py builtin --time-one   # time one linear run, then stop

Methods (3 seeds, mAP mean +- std, sample std):

* (a) linear head + BCE;
* (b) label-attention head (``mlcl.models.label_attention.LabelAttentionHead``) + BCE = MulCon stage 1;
* (c) MulCon stage 2: from (b)'s weights, two views per image, ``BCE + 0.5 * LabelSupConLoss`` (tau 0.2);
* (d) image-level SupCon: pooled embedding + MLP projection, two views, ``BCE + 0.5 * ImageSupConLoss`` (tau 0.1).

Controls, so that a difference can be attributed to the contrastive term and not to the extra epochs or the two
views: (b') = (c) with weight 0 (stage 2's schedule and views, BCE only), and on MIML (d') = (d) with weight 0.

``miml`` (frozen-feature protocol, NOT end-to-end): frozen ImageNet ``tf_efficientnet_lite0`` at 224 px
(``benchmarks/_features.py``), K = 4 cached augmented views per training image, heldout = the 300 images of
``benchmarks/miml_split.py`` (the training split is 1200 images; nothing is chosen on heldout, the weights after
the last epoch are scored). Pooled features and tokens are standardised per channel with training statistics.

* (a): ``Linear(1280, C)`` on the pooled feature of one random view per image per step.
* (b): ``LabelAttentionHead(1280, C, dim=256, heads=4, num_sab=0, proj_hidden=256, proj_dim=128)`` on the 7 x 7 =
  49 tokens of one random view (``num_sab=0``: no token self-attention, the lighter head the library offers; the
  1280-wide SABs would cost ~40 GFLOP per batch on this CPU).
* (a) and (b): AdamW (lr 1e-3, weight decay 1e-4), per-step cosine, batch 64, ``--stage1-epochs`` (20); (a) and
  (d) get ``stage1 + stage2`` epochs, the same number of passes as (b) + (c).
* (c) / (b'): (b)'s final weights (no EMA here), a fresh projector (official init), two distinct random views per
  image per step, batch 24 images = 48 rows (official), SGD momentum 0.9, weight decay 1e-4, lr 0.01 for the
  classifiers and projector, 0.001 for the attention block (official stage-2 rates; constant, as the official step
  schedule decays only after 20 epochs), ``--stage2-epochs`` (8).
* (d) / (d'): ``Linear(1280, 512)-ReLU`` embedding -> linear classifier; projection ``Linear(512, 512)-ReLU-
  Linear(512, 128)``, L2-normalised; two distinct views per step; AdamW as (a).

``builtin`` (end-to-end through ``mlcl.engine.trainer.fit``): the built-in digits dataset (4000 train / 600 val /
1000 test canvases, 48 px), backbone ``resnet10t`` from scratch, CPU (1 thread), batch 32, ``light`` augmentation,
EMA; each run reports its best-on-val checkpoint on the *test* split (``metrics.json``, ``split: test``). The budget
is matched in image forward passes (one epoch = 4000 passes, two views = 8000): 4 passes per image for every method.
One epoch of (a) takes ~40 s here, so the defaults (3 seeds, 5 runs each) fit in about 25 minutes.

* (a) ``model.head=linear``, AdamW lr 2e-3 one-cycle (the defaults), ``--lin-epochs`` (4);
* (b) + (c) ``train.method=mulcon`` with a small head (dim 128, heads 4, num_sab 0, projector 128/64), stage 1
  ``--stage1-epochs`` (2) with lr 2e-3 for head and backbone (the official 2e-4/2e-5 assume a pretrained
  backbone), warm-up over the first 20 % (as the one-cycle of (a)); stage 2 ``--stage2-epochs`` (1) with the
  official rates (SGD, 0.01 / 0.001, 24 images x 2 views). ``stage1/metrics.json`` gives (b), ``metrics.json`` (c).
  ``num_sab 0`` because a token self-attention block on the 2 x 2 tokens of a *randomly initialised* backbone
  keeps the head at the label prior: with one SAB, stage 1 ended at 30.4 mAP on all 3 seeds (train loss 0.47,
  the prior's), and in 150-step probes the loss stayed at 0.48-0.49 with the SAB and fell to 0.45 without it
  (linear head: 0.42). The official head assumes a pretrained backbone;
* (b') stage 2 again from the same stage-1 weights with ``loss.contrastive_weight=0`` (``--controls``);
* (d) ``model.head=linear``, ``loss.contrastive=image``, two views, weight 0.5, tau 0.1, projector 128/64,
  ``--image-epochs`` (2).

Results: one run folder per (method, seed) in ``--out`` (``miml``: written by ``benchmarks/_runs.py`` with
``bench.method`` and ``train.seed`` in ``config.yaml``; ``builtin``: the trainer's own folders, (b) being a MulCon
run's ``stage1``), and ``mlcl compare``'s table of them (printed, with the equivalent command, and written to
``compare.html`` / ``compare.md`` in ``--out``): mean +- sample std over the seeds, each method paired by seed with
its control (:data:`CONTROL`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _features import CACHE_DIR, DEFAULT_SPLIT_DIR, DEFAULT_WEIGHTS, ROOT, load_features
from _runs import compare, epoch_record, write_run
from mlcl.losses import build_loss
from mlcl.losses.supcon import ImageSupConLoss, LabelSupConLoss
from mlcl.models.label_attention import LabelAttentionHead

LABELS = {
    "a": "(a) linear head + BCE",
    "b": "(b) label-attention head + BCE (MulCon stage 1)",
    "b2": "(b') stage 1 + stage-2 schedule; BCE only (control)",
    "c": "(c) MulCon stage 2: BCE + 0.5 label SupCon",
    "d2": "(d') pooled embedding + MLP; two views; BCE only (control)",
    "d": "(d) image-level SupCon: BCE + 0.5 image SupCon",
}

#: The row each method is compared with (paired by seed): its closest control.
CONTROL = {"b": "a", "b2": "b", "c": "b2", "d2": "a", "d": "d2"}


# ------------------------------------------------------------------------------------------- MIML, frozen


class TokenData:
    """Standardised batches of cached views: pooled ``(N, K, D)`` and tokens ``(N, K, T, D)`` (float16)."""

    def __init__(self, tr: dict[str, Any], he: dict[str, Any]) -> None:
        ev = tr["eval_pooled"]
        self.p_mean, self.p_std = ev.mean(0), ev.std(0).clamp_min(1e-6)
        tok = tr["eval_tokens"].float().flatten(0, 1)
        self.t_mean, self.t_std = tok.mean(0), tok.std(0).clamp_min(1e-6)
        self.aug_pooled, self.aug_tokens = tr["aug_pooled"], tr["aug_tokens"]
        self.y_train, self.y_test = tr["targets"], he["targets"]
        self.test_pooled = self.pooled(he["eval_pooled"])
        self.test_tokens = he["eval_tokens"]
        self.n, self.k = self.aug_pooled.shape[:2]

    def pooled(self, x: Tensor) -> Tensor:
        return (x - self.p_mean) / self.p_std

    def tokens(self, x: Tensor) -> Tensor:
        return (x.float() - self.t_mean) / self.t_std

    def batches(self, batch_size: int, gen: torch.Generator, views: int):
        """Yield ``(index (B,), view index (B, views))`` for one epoch (views distinct per image)."""
        order = torch.randperm(self.n, generator=gen)
        pick = torch.argsort(torch.rand(self.n, self.k, generator=gen), dim=1)[:, :views]
        for s in range(self.n // batch_size):
            idx = order[s * batch_size : (s + 1) * batch_size]
            yield idx, pick[idx]


class PooledNet(nn.Module):
    """(a): linear head; (d): ``Linear(D, 512)-ReLU`` embedding, linear head and a projection MLP."""

    def __init__(self, in_dim: int, num_classes: int, embed: bool) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, 512), nn.ReLU()) if embed else nn.Identity()
        width = 512 if embed else in_dim
        self.fc = nn.Linear(width, num_classes)
        self.proj = nn.Sequential(nn.Linear(width, 512), nn.ReLU(), nn.Linear(512, 128)) if embed else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        e = self.embed(x)
        return self.fc(e), (F.normalize(self.proj(e), dim=-1) if self.proj is not None else None)


def _cosine_adamw(params, lr: float, total_steps: int):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))


def train_pooled(
    data: TokenData, seed: int, epochs: int, *, embed: bool, supcon_w: float | None, lr: float, batch_size: int = 64
) -> tuple[PooledNet, list[dict[str, Any]]]:
    """(a) when ``embed`` is False; (d) / (d') with two views when ``supcon_w`` is not None (with the epochs' log)."""
    torch.manual_seed(seed)
    y_all = data.y_train
    model = PooledNet(data.aug_pooled.shape[-1], y_all.shape[1], embed)
    bce = build_loss("bce", reduction="mean")
    con = ImageSupConLoss(tau=0.1, base_tau=0.1)
    views = 1 if supcon_w is None else 2
    opt, sched = _cosine_adamw(model.parameters(), lr, epochs * (data.n // batch_size))
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for idx, pick in data.batches(batch_size, gen, views):
            # rows: [view 1 of every image; view 2 of every image] (the trainer's layout)
            x = torch.cat([data.pooled(data.aug_pooled[idx, pick[:, v]]) for v in range(views)])
            y = y_all[idx].repeat(views, 1)
            logits, z = model(x)
            loss = bce(logits, y)
            if supcon_w:
                loss = loss + supcon_w * con(z, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append(epoch_record(epoch, data.n // batch_size, sched.get_last_lr()[0], total, t0))
    return model, history


def make_head(in_dim: int, num_classes: int) -> LabelAttentionHead:
    return LabelAttentionHead(in_dim, num_classes, dim=256, heads=4, num_sab=0, proj_hidden=256, proj_dim=128)


def train_stage1(
    data: TokenData, seed: int, epochs: int, lr: float, batch_size: int = 64
) -> tuple[LabelAttentionHead, list[dict[str, Any]]]:
    torch.manual_seed(seed)
    head = make_head(data.aug_tokens.shape[-1], data.y_train.shape[1])
    head.projector.requires_grad_(False)
    bce = build_loss("bce", reduction="mean")
    params = [p for p in head.parameters() if p.requires_grad]
    opt, sched = _cosine_adamw(params, lr, epochs * (data.n // batch_size))
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for idx, pick in data.batches(batch_size, gen, 1):
            out = head(data.tokens(data.aug_tokens[idx, pick[:, 0]]))
            loss = bce(out.logits, data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append(epoch_record(epoch, data.n // batch_size, sched.get_last_lr()[0], total, t0))
    return head, history


def train_stage2(
    data: TokenData, stage1: LabelAttentionHead, seed: int, epochs: int, weight: float, batch_size: int = 24
) -> tuple[LabelAttentionHead, list[dict[str, Any]]]:
    """Official stage-2 recipe on cached tokens; ``weight`` multiplies the label-level SupCon (0 = control)."""
    torch.manual_seed(seed + 1000)
    head = make_head(stage1.in_dim, stage1.num_classes)
    head.load_state_dict(stage1.state_dict())
    with torch.no_grad():  # fresh projector, official init
        for m in head.projector:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
    fast = [head.classifier_weight, head.classifier_bias, *head.projector.parameters()]
    fast_ids = {id(p) for p in fast}
    slow = [p for p in head.parameters() if id(p) not in fast_ids]
    opt = torch.optim.SGD(
        [{"params": fast, "lr": 0.01}, {"params": slow, "lr": 0.001}], momentum=0.9, weight_decay=1e-4
    )
    bce = build_loss("bce", reduction="mean")
    con = LabelSupConLoss(tau=0.2, base_tau=0.2)
    gen = torch.Generator().manual_seed(seed + 1000)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for idx, pick in data.batches(batch_size, gen, 2):
            x = torch.cat([data.tokens(data.aug_tokens[idx, pick[:, v]]) for v in range(2)])
            y = data.y_train[idx].repeat(2, 1)
            out = head(x)
            loss = bce(out.logits, y) + weight * con(head.project(out.label_emb), y, out.logits.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append(epoch_record(epoch, data.n // batch_size, opt.param_groups[0]["lr"], total, t0))
    return head, history


@torch.no_grad()
def probs_head(head: LabelAttentionHead, data: TokenData, batch: int = 100) -> Tensor:
    head.eval()
    logits = torch.cat(
        [head(data.tokens(data.test_tokens[i : i + batch])).logits for i in range(0, data.test_tokens.shape[0], batch)]
    )
    return torch.sigmoid(logits)


@torch.no_grad()
def probs_pooled(model: PooledNet, data: TokenData) -> Tensor:
    model.eval()
    return torch.sigmoid(model(data.test_pooled)[0])


def run_miml(a: argparse.Namespace) -> dict[str, Any]:
    common = {
        "size": a.image_size,
        "views": a.views,
        "split_dir": a.split_dir,
        "weights": a.weights,
        "cache_dir": a.cache_dir,
        "limit": a.limit,
    }
    tr, he = load_features("train", **common), load_features("heldout", **common)
    data = TokenData(tr, he)
    e1, e2 = a.stage1_epochs, a.stage2_epochs
    settings = {
        "stage1_epochs": e1,
        "stage2_epochs": e2,
        "views": a.views,
        "lr": a.lr,
        "contrastive_weight": a.weight,
        "n_train": data.n,
        "n_heldout": int(data.y_test.shape[0]),
        "limit": a.limit,
    }

    def run(key: str, seed: int, trained: tuple[Any, list[dict[str, Any]]], probs: Tensor) -> None:
        model, history = trained
        config = {
            "bench": {
                "protocol": "frozen-feature MIML (benchmarks/bench_mulcon.py)",
                "method": LABELS[key],
                **settings,
            },
            "train": {"seed": seed},
        }
        metrics = write_run(
            a.out / f"m{list(LABELS).index(key)}-{key}-s{seed}", config=config, history=history, scores=probs,
            targets=data.y_test, class_names=tr["class_names"], ids=he["ids"], train_targets=data.y_train,
            data="MIML heldout (frozen features)",
        )  # fmt: skip
        print(f"seed {seed} {key}: {100 * metrics['mAP']:.2f} ({sum(h['time_s'] for h in history):.0f} s)", flush=True)

    for seed in a.seeds:
        for key, embed, w in (("a", False, None), ("d2", True, 0.0), ("d", True, a.weight)):
            m = train_pooled(data, seed, e1 + e2, embed=embed, supcon_w=w, lr=a.lr)
            run(key, seed, m, probs_pooled(m[0], data))
        s1 = train_stage1(data, seed, e1, a.lr)
        run("b", seed, s1, probs_head(s1[0], data))
        for key, w in (("b2", 0.0), ("c", a.weight)):
            h = train_stage2(data, s1[0], seed, e2, w)
            run(key, seed, h, probs_head(h[0], data))
    print(
        f"\n### MIML, frozen tf_efficientnet_lite0 features (frozen-feature protocol, not end-to-end): heldout, "
        f"seeds {a.seeds}; stage 1 {e1} epochs, stage 2 {e2} epochs"
    )
    pairs = [(f"bench.method={LABELS[k]}", f"bench.method={LABELS[c]}") for k, c in CONTROL.items()]
    compare(a.out, "bench.method", pairs)
    return {"settings": {**settings, "seeds": a.seeds}, "labels": LABELS}


# ---------------------------------------------------------------------------------------- builtin, e2e


BUILTIN_COMMON = [
    "data.train=builtin",
    "model.backbone=resnet10t",
    "train.device=cpu",
    "data.num_workers=0",
    "run.progress=false",
    "run.tensorboard=false",
    "train.batch_size=32",
]
EXTRA: list[str] = []  # --max-steps (smoke tests)
SMALL_HEAD = [
    "model.head_dim=128",
    "model.head_heads=4",
    "model.head_num_sab=0",
    "model.proj_hidden=128",
    "model.proj_dim=64",
]


#: The run names (folder names without the seed) of the builtin methods; ``{w}`` is the contrastive weight.
BUILTIN_NAMES = {
    "a": "linear",
    "b": "mulcon/stage1",
    "b2": "mulcon_w0",
    "c": "mulcon",
    "d2": "imagesupcon_w0",
    "d": "imagesupcon_w{w}",
}


def _fit(overrides: list[str]) -> float:
    """Train through the library's trainer; returns the wall time in seconds."""
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    t0 = time.time()
    fit(load_config(None, [*BUILTIN_COMMON, *EXTRA, *overrides]))
    return time.time() - t0


def _fit_stage2(overrides: list[str], stage1_best: Path) -> float:
    """MulCon's stage 2 alone (the trainer's own stage-2 configuration) from a finished stage 1's ``best.pt``, as
    a plain run in ``run.out``; returns the wall time in seconds."""
    from mlcl.engine.build import mulcon_stage_configs
    from mlcl.engine.config import load_config
    from mlcl.engine.trainer import fit

    t0 = time.time()
    cfg = load_config(None, [*BUILTIN_COMMON, *EXTRA, *overrides])
    _, s2 = mulcon_stage_configs(cfg)
    s2.run.out, s2.train.init_from = cfg.run.out, str(stage1_best)
    fit(s2)
    return time.time() - t0


def _fresh(run_dir: Path) -> Path:
    """Remove a previous run folder of the same name (the trainer appends to ``log.jsonl`` and resumes stages)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def _drop_checkpoints(run_dir: Path, keep: bool) -> None:
    """Delete the run's ``*.pt`` files (about 100 MB each) once its metrics are read, unless ``keep``."""
    if not keep:
        for f in run_dir.rglob("*.pt"):
            f.unlink()


def _metrics(path: Path) -> float:
    m = json.loads(path.read_text())
    if m.get("split") != "test":
        raise RuntimeError(f"{path}: expected a test-split report, got split={m.get('split')!r}")
    return float(m["mAP"])


def run_builtin(a: argparse.Namespace) -> dict[str, Any]:
    out = a.out
    folders: list[Path] = []
    for seed in a.seeds:
        base = [f"train.seed={seed}"]
        lin = out / f"linear_s{seed}"
        t = _fit([*base, "model.head=linear", f"train.epochs={a.lin_epochs}", f"run.out={_fresh(lin)}"])
        folders.append(lin)
        _drop_checkpoints(lin, a.keep_checkpoints)
        print(f"seed {seed} a: {100 * _metrics(lin / 'metrics.json'):.2f} ({t:.0f} s)", flush=True)
        if a.time_one:
            break
        mc = out / f"mulcon_s{seed}"
        mulcon = [
            *base,
            *SMALL_HEAD,
            "train.method=mulcon",
            f"mulcon.stage1_epochs={a.stage1_epochs}",
            f"mulcon.stage2_epochs={a.stage2_epochs}",
            "mulcon.stage1_lr=2e-3",
            "mulcon.stage1_backbone_lr=2e-3",
            f"mulcon.stage1_warmup_epochs={0.2 * a.stage1_epochs:g}",
            f"loss.contrastive_weight={a.weight}",
        ]
        t = _fit([*mulcon, f"run.out={_fresh(mc)}"])
        folders += [mc / "stage1", mc]
        b, c = _metrics(mc / "stage1" / "metrics.json"), _metrics(mc / "metrics.json")
        print(f"seed {seed} b: {100 * b:.2f}, c: {100 * c:.2f} ({t:.0f} s)", flush=True)
        if a.controls:  # stage 2 with weight 0 from the very same stage-1 weights
            ctl = _fresh(out / f"mulcon_w0_s{seed}")
            over = [x for x in mulcon if not x.startswith("loss.contrastive_weight")]
            t = _fit_stage2([*over, "loss.contrastive_weight=0", f"run.out={ctl}"], mc / "stage1" / "best.pt")
            folders.append(ctl)
            _drop_checkpoints(ctl, a.keep_checkpoints)
            print(f"seed {seed} b': {100 * _metrics(ctl / 'metrics.json'):.2f} ({t:.0f} s)", flush=True)
        _drop_checkpoints(mc, a.keep_checkpoints)
        image = [
            *base,
            "model.head=linear",
            "loss.contrastive=image",
            "data.views=2",
            "loss.con_tau=0.1",
            "loss.con_base_tau=0.1",
            "model.proj_hidden=128",
            "model.proj_dim=64",
            f"train.epochs={a.image_epochs}",
        ]
        for key, weight in (("d", a.weight), ("d2", 0.0)) if a.controls else (("d", a.weight),):
            img = out / f"imagesupcon_w{weight:g}_s{seed}"
            t = _fit([*image, f"loss.contrastive_weight={weight}", f"run.out={_fresh(img)}"])
            folders.append(img)
            _drop_checkpoints(img, a.keep_checkpoints)
            print(f"seed {seed} {key}: {100 * _metrics(img / 'metrics.json'):.2f} ({t:.0f} s)", flush=True)
    if not a.time_one:
        print(
            f"\n### builtin, end-to-end through `fit` (resnet10t from scratch, 48 px, CPU): test mAP, seeds "
            f"{a.seeds}; linear {a.lin_epochs} epochs, image SupCon {a.image_epochs} x 2 views, "
            f"stage 1 {a.stage1_epochs} + stage 2 {a.stage2_epochs} x 2 views"
        )
        # the run folders' names (seed suffix removed) are the methods: see BUILTIN_NAMES
        names = {k: f"name={v.format(w=f'{a.weight:g}')}" for k, v in BUILTIN_NAMES.items()}
        control = CONTROL if a.controls else {"b": "a", "c": "b", "d": "a"}
        compare(out, "name", [(names[k], names[c]) for k, c in control.items()], runs=folders)
    return {
        "protocol": "end-to-end through mlcl.engine.trainer.fit on builtin; best-on-val checkpoint on test",
        "settings": {
            "lin_epochs": a.lin_epochs,
            "image_epochs": a.image_epochs,
            "stage1_epochs": a.stage1_epochs,
            "stage2_epochs": a.stage2_epochs,
            "seeds": a.seeds,
            "contrastive_weight": a.weight,
            "common_overrides": BUILTIN_COMMON,
            "head": SMALL_HEAD,
            "out": str(out),
        },
        "labels": LABELS,
        "names": BUILTIN_NAMES,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", choices=["miml", "builtin"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--stage1-epochs", type=int, default=None, help="default: miml 20, builtin 2")
    ap.add_argument("--stage2-epochs", type=int, default=None, help="default: miml 8, builtin 1")
    ap.add_argument("--lin-epochs", type=int, default=4, help="builtin: epochs of (a)")
    ap.add_argument("--image-epochs", type=int, default=2, help="builtin: epochs of (d) (two views per image)")
    ap.add_argument("--weight", type=float, default=0.5, help="weight of the contrastive terms")
    ap.add_argument("--lr", type=float, default=1e-3, help="miml: AdamW lr of (a), (b), (d)")
    ap.add_argument(
        "--controls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="builtin: also run the stage-2 control with weight 0",
    )
    ap.add_argument("--max-steps", type=int, default=None, help="builtin: train.max_steps_per_epoch (smoke tests)")
    ap.add_argument("--time-one", action="store_true", help="builtin: time one linear run and stop")
    ap.add_argument("--keep-checkpoints", action="store_true", help="builtin: keep the runs' *.pt files")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--split-dir", type=Path, default=DEFAULT_SPLIT_DIR)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    ap.add_argument("--limit", type=int, default=None, help="miml: first images only (smoke test; nothing cached)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribes a shared 2-core CPU)")
    ap.add_argument(
        "--out", type=Path, default=None, help="folder of the run folders and the table (default results/mulcon_DATA)"
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.stage1_epochs is None:
        a.stage1_epochs = 20 if a.data == "miml" else 2
    if a.stage2_epochs is None:
        a.stage2_epochs = 8 if a.data == "miml" else 1
    if a.max_steps:
        EXTRA.append(f"train.max_steps_per_epoch={a.max_steps}")
    a.out = a.out or ROOT / "results" / f"mulcon_{a.data}"
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = run_miml(a) if a.data == "miml" else run_builtin(a)
    result["total_s"] = round(time.time() - t0, 1)
    print(f"\ntotal {result['total_s']:.0f} s")
    (a.out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
