"""End-to-end fine-tuning studies on the MIML photos, run through `mlcl train` and read back with `mlcl compare`.

Two studies share one queue of `mlcl train` runs, executed by ``--jobs`` parallel processes:

* ``missing`` (missing-label methods, with and without CLML): every base of :data:`METHODS` under
  ``single-positive`` on the training labels. CLML's weight is chosen per base on the trainer's validation split
  (a seeded 10 % of the TRAINING images; the 300 held-out photos are never used for a choice) from
  :data:`CLML_GRID` on seed 0; when the best weight is the largest tried, the next one (x10) is added, until the
  optimum is inside the grid. The chosen weight then runs on seeds 1 and 2 with the base alone beside it. Last in
  the queue, at lower priority: the same pairs under ``drop:0.5`` (the weight chosen under single-positive).
* ``mulcon`` (the label-attention head and the contrastive terms, full labels): the rows of :data:`MULCON_ROWS`.

Runs are ordered by priority; with ``--deadline-s`` no run starts after that many seconds (a run already
started finishes), so a fixed budget gives the most important runs first. A run whose folder already holds
``metrics.json`` is kept, so an interrupted study resumes. Every run's folder is a normal run folder, and the
tables are computed by :func:`mlcl.report.compare.compare_runs` (``mlcl compare``): the one place that computes
paired statistics (runs grouped by their folder name without the seed, ``--group-by name``)::

    python benchmarks/miml_e2e.py --out runs/e2e --device cuda --jobs 8
    mlcl compare runs/e2e/missing/*-sp-s? --baseline <group>     # any sub-table, by hand
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _runs import finished, prune_checkpoints, run_train  # noqa: E402
from miml_split import make_split  # noqa: E402

#: Base losses of the missing-label study: table name -> `mlcl train` arguments.
METHODS: dict[str, list[str]] = {
    "AN": ["--loss", "bce-an"],
    "SPLC": ["--loss", "splc"],
    "LL-R": ["--loss", "ll-r"],
    "ROLE": ["--loss", "role"],
    "GR Loss": ["--loss", "gr"],
    "EM + APL": ["--loss", "em-apl", "-o", "loss.options.warmup_epoch=1"],
    "BoostLU + LL-R": ["--loss", "boostlu-ll-r"],
    "GPR (own scores)": ["--loss", "gpr"],
}
#: CLML weights of the seed-0 grid, as multiples of 1 / (batch x classes): the official weight 1 on a base summed
#: over the batch's entries is 1 / (N C) on mlcl's mean-reduced bases; 0.01 is indistinguishable from none.
CLML_GRID = (0.01, 0.1, 1.0)
#: MulCon study (full labels): run name -> `mlcl train` arguments, and the seeds it runs on.
MULCON_SPECS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "linear": ([], (0, 1, 2)),
    "mulcon": (["--method", "mulcon"], (0, 1, 2)),
    "mulcon-control": (["--method", "mulcon", "-o", "loss.contrastive_weight=0"], (0, 1, 2)),
    "image-control": (["--views", "2"], (0, 1, 2)),
    "image-supcon": (["--views", "2", "--contrastive", "image"], (0, 1, 2)),
    "mulcon-official": (["--method", "mulcon", "-o", "mulcon.recipe=official"], (0,)),
    # Ablations of the default recipe, seed 0, judged on the validation split (stage 1).
    "mulcon-random-head": (
        ["--method", "mulcon", "-o", "train.head_init=random", "-o", "mulcon.stage2_epochs=1"],
        (0,),
    ),
    "mulcon-bn-trained": (["--method", "mulcon", "-o", "train.freeze_bn=false", "-o", "mulcon.stage2_epochs=1"], (0,)),
    "mulcon-head-lr-1e-3": (
        ["--method", "mulcon", "-o", "mulcon.stage1_lr=1e-3", "-o", "mulcon.stage2_epochs=1"],
        (0,),
    ),
    "mulcon-attention-lr-0": (
        ["--method", "mulcon", "-o", "mulcon.stage1_attention_lr=0", "-o", "mulcon.stage2_epochs=1"],
        (0,),
    ),
    # A lighter head: no token self-attention blocks (the label queries attend to the backbone's tokens directly).
    "mulcon-no-token-sab": (["--method", "mulcon", "-o", "model.head_num_sab=0", "-o", "mulcon.stage2_epochs=1"], (0,)),
}
#: Rows of the MulCon table: (label, run name, stage folder or "", label of the row it is paired against).
MULCON_ROWS: list[tuple[str, str, str, str | None]] = [
    ("(a) linear head + BCE", "linear", "", None),
    ("(b) label-attention head + BCE (MulCon stage 1)", "mulcon", "stage1", "(a)"),
    ("(b') stage 1 + stage-2 schedule, BCE only (control)", "mulcon-control", "stage2", "(b)"),
    ("(c) MulCon stage 2: BCE + 0.5 label SupCon", "mulcon", "stage2", "(b')"),
    ("(d') pooled embedding, two views, BCE only (control)", "image-control", "", "(a)"),
    ("(d) image-level SupCon: BCE + 0.5 image SupCon, two views", "image-supcon", "", "(d')"),
    ("(b-off) stage 1, official recipe", "mulcon-official", "stage1", "(b)"),
    ("(c-off) stage 2, official recipe", "mulcon-official", "stage2", "(b-off)"),
]


@dataclass(order=True)
class Job:
    """One `mlcl train` run: lower ``priority`` starts first."""

    priority: float
    name: str = field(compare=False)
    args: list[str] = field(compare=False)
    out: Path = field(compare=False)


@dataclass
class Pool:
    """Runs jobs with ``jobs`` processes; ``on_done`` may queue more jobs."""

    jobs: int
    threads: int
    deadline: float
    log: Path
    control: list[str] = field(default_factory=list)
    #: Delete the checkpoints of every finished run (:func:`_runs.prune_checkpoints`: the disk rule of grids).
    prune: bool = False
    queue: list[Job] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0

    def add(self, job: Job) -> None:
        with self.lock:
            if any(j.out == job.out for j in self.queue):
                return
            self.queue.append(job)
            self.queue.sort()

    def _take(self) -> Job | None:
        with self.lock:
            if not self.queue:
                return None
            if time.monotonic() > self.deadline:
                self.skipped += [j.name for j in self.queue]
                self.queue.clear()
                return None
            self.running += 1
            return self.queue.pop(0)

    def _run(self, job: Job, on_done: Callable[[Job, bool], None]) -> None:
        ok = finished(job.out)
        if not ok:
            rc, seconds = run_train(job.args, job.out, control=self.control, threads=self.threads)
            ok = rc == 0 and finished(job.out)
            with self.lock, open(self.log, "a") as f:
                f.write(json.dumps({"run": str(job.out), "rc": rc, "seconds": seconds, "cmd": job.args}) + "\n")
        if ok and self.prune:
            prune_checkpoints(job.out)
        on_done(job, ok)
        with self.lock:
            self.running -= 1

    def replay(self, on_done: Callable[[Job, bool], None]) -> None:
        """Read back the finished runs of the queue (and of what they queue in turn) without starting any."""
        seen: set[Path] = set()
        while True:
            with self.lock:
                ready = [j for j in self.queue if j.out not in seen and finished(j.out)]
            if not ready:
                return
            for job in ready:
                seen.add(job.out)
                if self.prune:
                    prune_checkpoints(job.out)
                on_done(job, True)

    def run(self, on_done: Callable[[Job, bool], None]) -> None:
        threads: list[threading.Thread] = []
        while True:
            with self.lock:
                idle = not self.queue and self.running == 0
                busy = self.running >= self.jobs
            if idle:
                break
            if busy or not self.queue:
                time.sleep(0.2)
                continue
            job = self._take()
            if job is None:
                continue
            t = threading.Thread(target=self._run, args=(job, on_done))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def _weight_tag(m: float) -> str:
    return f"clml{m:g}"


class MissingStudy:
    """The missing-label study.

    Priorities: every base on seed 0 and the CLML grid on seed 0 (of ``grid_methods``) first, then every base on
    seeds 1 and 2; once the grid is done, CLML at the official-equivalent weight (and at the chosen one, see
    :meth:`done`) with every base on seeds 0, 1, 2, base by base; last, the runs of the second protocol (``drop:0.5``
    by default), bases alone first.

    ``protocols`` maps a run-name tag to its ``--missing`` value: the first one's seed-0 grid chooses the weight,
    which the second one reuses. ``method_args`` gives each base's ``mlcl train`` arguments (default
    :data:`METHODS`), ``grid`` the seed-0 CLML weights in units of ``1 / (batch x classes)`` (default
    :data:`CLML_GRID`).
    """

    def __init__(
        self, pool: Pool, root: Path, common: list[str], batch: int, classes: int, methods: list[str],
        grid_methods: list[str], *, protocols: dict[str, str] | None = None,
        method_args: dict[str, list[str]] | None = None, grid: tuple[float, ...] = CLML_GRID,
    ) -> None:  # fmt: skip
        self.pool, self.root, self.common, self.methods, self.grid_methods = pool, root, common, methods, grid_methods
        self.protocols = protocols or {"sp": "single-positive", "drop": "drop:0.5"}
        self.first, self.second = list(self.protocols)
        self.method_args = method_args or METHODS
        self.base_grid = tuple(grid)
        self.unit = 1.0 / (batch * classes)
        self.grid: dict[str, dict[float, float]] = {m: {} for m in grid_methods}
        self.mults: list[float] = list(grid)
        self.chosen: float | None = None

    def run_dir(self, method: str, tag: str, protocol: str, seed: int) -> Path:
        return self.root / "missing" / f"{_slug(method)}-{tag}-{protocol}-s{seed}"

    def job(self, method: str, mult: float | None, protocol: str, seed: int, priority: float) -> Job:
        args = [*self.common, *self.method_args[method], "--seed", str(seed)]
        args += ["--missing", self.protocols[protocol]]
        tag = "none"
        if mult is not None:
            args[args.index("--loss") + 1] += "+clml"
            args += ["--clml-weight", f"{mult * self.unit:.6g}"]
            tag = _weight_tag(mult)
        return Job(priority, f"{method} {tag} {protocol} s{seed}", args, self.run_dir(method, tag, protocol, seed))

    def start(self) -> None:
        first = self.first
        for i, m in enumerate(self.methods):
            self.pool.add(self.job(m, None, first, 0, 1 + i * 1e-3))
            for mult in self.base_grid if m in self.grid_methods else ():
                self.pool.add(self.job(m, mult, first, 0, 1 + i * 1e-3))
            for seed in (1, 2):
                self.pool.add(self.job(m, None, first, seed, 3 + seed * 0.1 + i * 1e-3))
                if m in self.grid_methods:  # the official-equivalent weight too, on every seed
                    self.pool.add(self.job(m, 1.0, first, seed, 3 + seed * 0.1))

    def done(self, job: Job, ok: bool) -> None:
        method, tag, protocol, seed = job.name.rsplit(" ", 3)
        if protocol != self.first or seed != "s0" or method not in self.grid_methods:
            return
        with self.pool.lock:
            self.grid[method][0.0 if tag == "none" else float(tag.removeprefix("clml"))] = (
                _metrics(job.out)["best_val_mAP"] if ok else math.nan
            )
            complete = all(k in g for g in self.grid.values() for k in [0.0, *self.mults])
            if not complete or self.chosen is not None:
                return
            mean = {k: float(np.nanmean([g[k] for g in self.grid.values()])) for k in self.mults}
            best = max(mean, key=lambda k: mean[k])
            if best == max(self.mults) and best < 1e4:  # the optimum is at the grid's edge: extend it
                self.mults.append(best * 10)
                extend = True
            else:
                self.chosen, extend = best, False
        if extend:
            for i, m in enumerate(self.grid_methods):
                self.pool.add(self.job(m, self.mults[-1], self.first, 0, 1.5 + i * 1e-3))
            return
        # Every base runs CLML at the official-equivalent weight (1 / (N C)) on every seed and both protocols, and
        # at the chosen weight too, unless that is the grid's smallest (indistinguishable from none: the grid
        # methods measured it on every seed, and on the other bases it would repeat the base run).
        weights = [1.0] + ([best] if best != 1.0 and best != self.base_grid[0] else [])
        for i, m in enumerate(self.methods):
            for seed in (0, 1, 2):
                for w in weights:
                    prio = 3 + seed * 0.1 if m in self.grid_methods else 4 + i * 0.01 + seed * 1e-3
                    self.pool.add(self.job(m, w, self.first, seed, prio))
                    self.pool.add(self.job(m, w, self.second, seed, 6 + i * 0.01 + seed * 1e-3))
                self.pool.add(self.job(m, None, self.second, seed, 5 + i * 0.01 + seed * 1e-3))


class MulconStudy:
    """The runs of ``specs`` (default :data:`MULCON_SPECS`), read back as the rows of :data:`MULCON_ROWS` that
    they hold."""

    def __init__(
        self,
        pool: Pool,
        root: Path,
        common: list[str],
        specs: dict[str, tuple[list[str], tuple[int, ...]]] | None = None,
    ) -> None:
        self.pool, self.root, self.common = pool, root, common
        self.specs = specs or MULCON_SPECS

    def run_dir(self, name: str, seed: int) -> Path:
        return self.root / "mulcon" / f"{name}-s{seed}"

    def start(self) -> None:
        for i, (name, (extra, seeds)) in enumerate(self.specs.items()):
            for seed in seeds:
                prio = (2 if seed == 0 else 3.05 + seed * 0.1) + i * 1e-3 if len(seeds) > 1 else 7
                args = [*self.common, *extra, "--seed", str(seed)]
                self.pool.add(Job(prio, f"{name} s{seed}", args, self.run_dir(name, seed)))

    def _runs(self, name: str, stage: str) -> list[Path]:
        runs = [self.run_dir(name, s) / stage for s in self.specs.get(name, ([], ()))[1]]
        return [p for p in runs if (p / "metrics.json").is_file()]

    def table(self) -> str:
        from mlcl.report.compare import compare_runs

        out = [
            "\n## MulCon study: held-out mAP / CF1 % (full labels; mean ± std over seeds; Δ paired by seed)\n",
            "| row | mAP | CF1 | paired against | Δ mAP | Δ CF1 |",
            "|---|---|---|---|---|---|",
        ]
        where = {label.split(" ")[0]: (name, stage) for label, name, stage, _ in MULCON_ROWS}
        for label, name, stage, control in MULCON_ROWS:
            runs = self._runs(name, stage)
            if not runs:
                continue
            ctrl = self._runs(*where[control]) if control else []
            if ctrl:
                c = compare_runs([str(p) for p in ctrl + runs], baseline=str(ctrl[0]), group_by="name")
                g = next(x for i, x in enumerate(c.groups) if i != c.baseline)
                tail = [control or "", _delta(g.deltas["mAP"]), _delta(g.deltas["CF1"])]
            else:
                g = compare_runs([str(p) for p in runs], group_by="name").groups[0]
                tail = ["", "", ""]
            out.append(
                f"| {label} | {_pm(g.mean['mAP'], g.std['mAP'])} | {_pm(g.mean['CF1'], g.std['CF1'])} | "
                + " | ".join(tail)
                + " |"
            )
        out += [
            "\n## MulCon recipe ablations: stage-1 validation mAP %, seed 0 (the linear head for reference)\n",
            "| run | validation mAP |",
            "|---|---|",
        ]
        for name in self.specs:
            p = self.run_dir(name, 0) / ("stage1" if name.startswith("mulcon") else "")
            if (name == "linear" or name.startswith("mulcon")) and (p / "metrics.json").is_file():
                out.append(f"| {name} | {100 * _metrics(p)['best_val_mAP']:.2f} |")
        return "\n".join(out) + "\n"


def tables(root: Path, study: MissingStudy | None) -> str:
    """Markdown tables of the finished runs, all statistics from :func:`mlcl.report.compare.compare_runs`."""
    from mlcl.report.compare import compare_runs

    out: list[str] = []
    if study is not None:
        out.append(f"## CLML weight grid (seed 0, validation mAP %, {study.protocols[study.first]})\n")
        mults = sorted({k for g in study.grid.values() for k in g})
        out.append("| method | " + " | ".join("none" if k == 0 else f"{k:g}/(NC)" for k in mults) + " | chosen |")
        out.append("|---|" + "---|" * (len(mults) + 1))
        for m in study.grid_methods:
            g = study.grid[m]
            cells = [f"{100 * g[k]:.2f}" if k in g and not math.isnan(g[k]) else "" for k in mults]
            chosen = study.chosen
            out.append(f"| {m} | " + " | ".join(cells) + f" | {'' if chosen is None else f'{chosen:g}/(NC)'} |")
        for protocol, missing in study.protocols.items():
            out.append(f"\n## {missing}: held-out mAP / CF1 % (mean ± std over seeds; Δ paired by seed)\n")
            out.append("| method | mAP | CF1 | + CLML (weight) | mAP | CF1 | Δ mAP | Δ CF1 | Δ mAP vs AN |")
            out.append("|---|---|---|---|---|---|---|---|---|")
            an = [study.run_dir("AN", "none", protocol, s) for s in range(3)]
            an = [p for p in an if (p / "metrics.json").is_file()]
            # One row per (base, CLML weight) with runs: the chosen weight and the official-equivalent one (1/(NC)).
            weights = [w for w in dict.fromkeys([study.chosen, 1.0]) if w is not None]
            rows: list[tuple[str, float | None]] = []
            for m in study.methods:
                have = [w for w in weights if finished(study.run_dir(m, _weight_tag(w), protocol, 0))]
                rows += [(m, w) for w in have] or [(m, None)]
            for m, w in rows:
                none = [study.run_dir(m, "none", protocol, s) for s in range(3)]
                none = [p for p in none if (p / "metrics.json").is_file()]
                if not none:
                    continue
                row = [m]
                c = compare_runs([str(p) for p in none], group_by="name")
                g = c.groups[0]
                row += [_pm(g.mean["mAP"], g.std["mAP"]), _pm(g.mean["CF1"], g.std["CF1"])]
                clml = [study.run_dir(m, _weight_tag(w), protocol, s) for s in range(3)] if w is not None else []
                clml = [p for p in clml if (p / "metrics.json").is_file()]
                if clml:
                    c = compare_runs([str(p) for p in none + clml], baseline=str(none[0]), group_by="name")
                    g = next(x for i, x in enumerate(c.groups) if i != c.baseline)
                    row += [
                        f"{w:g}/(NC) = {w * study.unit:.3g}",
                        _pm(g.mean["mAP"], g.std["mAP"]),
                        _pm(g.mean["CF1"], g.std["CF1"]),
                        _delta(g.deltas["mAP"]),
                        _delta(g.deltas["CF1"]),
                    ]
                else:
                    row += ["", "", "", "", ""]
                if m != "AN" and an:
                    c = compare_runs([str(p) for p in an + none], baseline=str(an[0]), group_by="name")
                    g = next(x for i, x in enumerate(c.groups) if i != c.baseline)
                    row.append(_delta(g.deltas["mAP"]))
                else:
                    row.append("")
                out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def _delta(d: object) -> str:
    mean, std, pairs = d.mean, d.std, d.pairs  # type: ignore[attr-defined]
    if pairs == 0:
        return ""
    return f"{100 * mean:+.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}") + f" (n={pairs})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--miml", type=Path, default=Path("../shared/data/miml"))
    ap.add_argument("--weights", type=Path, default=Path("../shared/weights/tf_efficientnet_lite0.pth"))
    ap.add_argument("--out", type=Path, default=Path("runs/e2e"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="parallel `mlcl train` processes")
    ap.add_argument("--threads", type=int, default=2, help="threads per process")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--deadline-s", type=float, default=math.inf, help="start no run after this many seconds")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the methods")
    ap.add_argument("--grid-methods", default="", help="methods whose mean validation mAP picks CLML's weight (all)")
    ap.add_argument("--studies", default="missing,mulcon", help="missing, mulcon or both")
    ap.add_argument("--tables-only", action="store_true", help="write the tables of the finished runs; start none")
    args = ap.parse_args()

    t0 = time.monotonic()
    train_csv, heldout_csv = make_split(args.miml, args.out / "split", seed=0)
    common = [
        "--data",
        str(train_csv),
        "--test-data",
        str(heldout_csv),
        "--backbone",
        "tf_efficientnet_lite0",
        "--weights",
        str(args.weights),
        "--image-size",
        str(args.image_size),
        "--epochs",
        str(args.epochs),
        "-o",
        "run.tensorboard=false",
    ]
    control = ["--device", args.device, "--workers", str(args.workers), "--no-progress"]
    pool = Pool(args.jobs, args.threads, t0 + args.deadline_s, args.out / "runs.jsonl", control)
    studies = args.studies.split(",")
    methods = args.methods.split(",")
    grid_methods = args.grid_methods.split(",") if args.grid_methods else methods
    study = MissingStudy(pool, args.out, common, 32, 5, methods, grid_methods)
    mulcon = MulconStudy(pool, args.out, common)
    if "missing" in studies:
        study.start()
    if "mulcon" in studies:
        mulcon.start()

    def on_done(job: Job, ok: bool) -> None:
        if job.out.parent.name == "missing":
            study.done(job, ok)

    if args.tables_only:
        pool.replay(on_done)
        pool.skipped = [j.name for j in pool.queue if not finished(j.out)]
    else:
        pool.run(on_done)
    (args.out / "grid.json").write_text(
        json.dumps(
            {
                "grid": {m: {str(k): v for k, v in g.items()} for m, g in study.grid.items()},
                "chosen": study.chosen,
                "skipped": pool.skipped,
            },
            indent=1,
        )
    )
    text = tables(args.out, study) if "missing" in studies else ""
    text += mulcon.table() if "mulcon" in studies else ""
    text += f"\n{len(pool.skipped)} runs not started (deadline); total {time.monotonic() - t0:.0f} s\n"
    (args.out / "tables.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
