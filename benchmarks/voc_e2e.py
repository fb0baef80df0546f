"""The VOC 2007 study (issue 23): `mlcl train` runs on VOC's `train`, choices on its 10 % hold-out, scores on `val`.

Run folders go under ``--root`` (outside the repository), one normal run folder per run; the queue and its
runner are :mod:`miml_e2e`'s (:class:`~miml_e2e.Pool`, :class:`~miml_e2e.MissingStudy`,
:class:`~miml_e2e.MulconStudy`), every table is :func:`mlcl.report.compare.compare_runs` / ``mlcl compare`` on the
run folders. Three studies:

* ``reference`` (full labels): the default recipe (fine-tuned) against the logistic probe on the frozen pooled
  features (``train.freeze=all``, the probe-initialised head at learning rate 0: the probe itself), 3 seeds, also
  trained and scored with VOC's difficult entries unknown (``*_difficult.csv``: scored the VOC way, difficult
  ignored); and the recipe investigation, seed 0, judged on the hold-out of ``train`` only
  (:data:`RECIPE`: learning rates, augmentation scale, epochs, resolution, BatchNorm statistics, head start).
* ``missing`` (CLML's claim): the bases of :data:`METHODS` without CLML, with CLML at the weight chosen on the
  hold-out (seed-0 grid :data:`CLML_GRID`, three decades, extended while the optimum is at its edge) and at the
  official-equivalent weight ``1 / (N C)``, under ``single-positive`` and ``partial:0.5``, seeds 0-2 paired. By
  default in the frozen-trunk protocol (``--frozen missing``: ``train.freeze=all``, a randomly initialised linear
  head, the "linear" setting of Cole et al.), since the fine-tuned grid does not fit the machine.
* ``mulcon`` (full labels): the label-attention head against the linear head at equal budget (stage 1), and
  MulCon's stage 2 against its control (same schedule, contrastive weight 0), seeds 0-2. The linear head's runs
  are the ``reference`` study's ``default`` runs (same arguments, same folders).

A run whose folder holds ``metrics.json`` is skipped (an interrupted study resumes by running the same command;
one stopped with a ``last.pt`` continues with ``--resume``); a finished run's checkpoints are deleted (the disk
rule of grids). Runs start one at a time by default, by priority: the probe and the default recipe on seed 0,
then the CLML grid on seed 0, then the rest (see :data:`REFERENCE`, :class:`~miml_e2e.MissingStudy`)::

    python benchmarks/voc_e2e.py --root RUNS/voc            # runs, then writes RUNS/voc/tables.md
    python benchmarks/voc_e2e.py --root RUNS/voc --tables-only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import compare, finished  # noqa: E402
from miml_e2e import Job, MissingStudy, MulconStudy, Pool, _metrics, tables  # noqa: E402
from voc_split import make_split  # noqa: E402

#: Classes of VOC and the batch size of every run (CLML's weight unit is 1 / (batch x classes)).
CLASSES, BATCH = 20, 32
#: Base losses of the CLML study: table name -> `mlcl train` arguments (the CLML code's bases, then the best
#: bases of the MIML study).
METHODS: dict[str, list[str]] = {
    "AN": ["--loss", "bce-an"],
    "Focal": ["--loss", "focal"],
    "Hill": ["--loss", "hill"],
    "SPLC": ["--loss", "splc"],
    "GR Loss": ["--loss", "gr"],
    "GPR (own scores)": ["--loss", "gpr"],
    "EM + APL": ["--loss", "em-apl", "-o", "loss.options.warmup_epoch=1"],
    "LL-R": ["--loss", "ll-r"],
}
#: Seed-0 CLML weights, in units of 1 / (N C) (1: the official weight on a summed base): three decades.
CLML_GRID = (0.01, 0.1, 1.0, 10.0)
#: Missing-label protocols: run-name tag -> `--missing` (the first one's grid chooses CLML's weight).
PROTOCOLS = {"sp": "single-positive", "partial": "partial:0.5"}
#: The frozen-trunk protocol of the studies named in ``--frozen``.
FROZEN = ["-o", "train.freeze=all", "-o", "train.head_init=random"]
#: The logistic probe as a run: the probe-initialised head (explicit: a set ``optim.lr`` otherwise means a random
#: head) on the frozen trunk, at learning rate 0.
PROBE = ["-o", "train.freeze=all", "-o", "train.head_init=probe", "--lr", "0", "--epochs", "1"]
#: The default recipe's head start and BatchNorm rule, explicit (a set ``optim.lr`` turns both off otherwise).
RECIPE_INIT = ["-o", "train.head_init=probe", "-o", "train.freeze_bn=true"]
#: Full-label reference runs: name -> (extra `mlcl train` arguments, seeds, difficult entries unknown, priority).
REFERENCE: dict[str, tuple[list[str], tuple[int, ...], bool, float]] = {
    "probe": (PROBE, (0, 1, 2), False, 0.1),
    "default": ([], (0, 1, 2), False, 0.2),
    "probe-difficult": (PROBE, (0, 1, 2), True, 3.5),
    "default-difficult": ([], (0, 1, 2), True, 3.6),
    "frozen-linear": (FROZEN, (0, 1, 2), False, 3.7),
}
#: The recipe investigation, seed 0, judged on the hold-out of `train` (validation mAP): name -> arguments.
RECIPE: dict[str, list[str]] = {
    "lr-1e-3": ["--lr", "1e-3", *RECIPE_INIT],
    "lr-5e-5": ["--lr", "5e-5", *RECIPE_INIT],
    "lr-1e-3-backbone-2e-4": ["--lr", "1e-3", "--backbone-lr", "2e-4", *RECIPE_INIT],
    "augment-flip": ["--augment", "flip"],
    "epochs-10": ["--epochs", "10"],
    "size-224": ["--image-size", "224"],
    "bn-trained": ["-o", "train.freeze_bn=false"],
    "head-random": ["-o", "train.head_init=random"],
}
#: MulCon study (full labels): run name -> (arguments, seeds); ``linear`` is the reference study's ``default``.
MULCON: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "linear": ([], (0, 1, 2)),
    "mulcon": (["--method", "mulcon"], (0, 1, 2)),
    "mulcon-control": (["--method", "mulcon", "-o", "loss.contrastive_weight=0"], (0, 1, 2)),
}


def data_args(split: Path, difficult: bool = False) -> list[str]:
    """``--data`` / ``--test-data`` of VOC's train / val CSVs written by :func:`voc_split.make_split`."""
    suffix = "_difficult" if difficult else ""
    return ["--data", str(split / f"train{suffix}.csv"), "--test-data", str(split / f"val{suffix}.csv")]


class ReferenceStudy:
    """The full-label reference runs (:data:`REFERENCE`) and the recipe investigation (:data:`RECIPE`)."""

    def __init__(self, pool: Pool, root: Path, common: list[str], split: Path, frozen_epochs: int) -> None:
        self.pool, self.root, self.common, self.split = pool, root, common, split
        self.frozen_epochs = frozen_epochs

    def run_dir(self, name: str, seed: int) -> Path:
        return self.root / "reference" / f"{name}-s{seed}"

    def start(self) -> None:
        for name, (extra, seeds, difficult, prio) in REFERENCE.items():
            for seed in seeds:
                args = [*self.common, *data_args(self.split, difficult), *extra, "--seed", str(seed)]
                if extra is FROZEN:
                    args += ["--epochs", str(self.frozen_epochs)]
                p = prio if seed == 0 else prio + 3 + seed * 0.1
                self.pool.add(Job(p, f"{name} s{seed}", args, self.run_dir(name, seed)))
        for i, (name, extra) in enumerate(RECIPE.items()):
            args = [*self.common, *data_args(self.split), *extra, "--seed", "0"]
            self.pool.add(Job(2.5 + i * 1e-3, f"{name} s0", args, self.run_dir(name, 0)))

    def tables(self) -> str:
        out = ["## Reference (full labels): VOC `val`, mean ± std over seeds, paired by seed\n"]
        folder = self.root / "reference"
        done = sorted(p for p in folder.glob("*-s?") if finished(p)) if folder.is_dir() else []
        groups = {p.name.rsplit("-s", 1)[0] for p in done}
        pairs = [(a, b) for a, b in (("default", "probe"), ("default-difficult", "probe-difficult"),
                                     ("frozen-linear", "probe")) if a in groups and b in groups]  # fmt: skip
        main = [p for p in done if p.name.rsplit("-s", 1)[0] in REFERENCE]
        if main:
            out.append(compare(folder, "name", pairs, runs=main))
        out += [
            "\n## Recipe investigation: validation mAP % on the hold-out of `train` (seed 0; `val` not used)\n",
            "| run | hold-out mAP | best epoch |",
            "|---|---|---|",
        ]
        for name in ["default", *RECIPE]:
            p = self.run_dir(name, 0)
            if finished(p):
                m = _metrics(p)
                out.append(f"| {name} | {100 * m['best_val_mAP']:.2f} | {m.get('best_epoch', '')} |")
        return "\n".join(out) + "\n"


class VocMulcon(MulconStudy):
    """:class:`~miml_e2e.MulconStudy` on VOC, whose linear head's runs are the reference study's ``default``."""

    def __init__(self, pool: Pool, root: Path, common: list[str], reference: ReferenceStudy) -> None:
        super().__init__(pool, root, common, specs=MULCON)
        self.reference = reference

    def run_dir(self, name: str, seed: int) -> Path:
        return self.reference.run_dir("default", seed) if name == "linear" else super().run_dir(name, seed)

    def start(self) -> None:
        for i, (name, (extra, seeds)) in enumerate(self.specs.items()):
            for seed in seeds:
                prio = REFERENCE["default"][3] if name == "linear" and seed == 0 else 7 + seed * 0.1 + i * 1e-3
                args = [*self.common, *extra, "--seed", str(seed)]
                self.pool.add(Job(prio, f"{name} s{seed}", args, self.run_dir(name, seed)))


def build(args: argparse.Namespace) -> tuple[Pool, ReferenceStudy, MissingStudy, VocMulcon, list[str]]:
    """The split, the queue and the three studies (started as ``args.studies`` says)."""
    split = args.root / "split"
    if not (split / "val_difficult.csv").is_file():
        make_split(args.voc, split)
    common = [
        "--backbone", "tf_efficientnet_lite0", "--weights", str(args.weights), "--image-size", str(args.image_size),
        "--epochs", str(args.epochs), "--batch-size", str(BATCH), "-o", "run.tensorboard=false",
    ]  # fmt: skip
    frozen = args.frozen.split(",") if args.frozen else []
    control = ["--device", args.device, "--workers", str(args.workers), "--no-progress"]
    pool = Pool(args.jobs, args.threads, time.monotonic() + args.deadline_s, args.root / "runs.jsonl", control)
    pool.prune = True
    reference = ReferenceStudy(pool, args.root, common, split, args.frozen_epochs)
    missing_common = [*common, *data_args(split), *(FROZEN if "missing" in frozen else [])]
    if "missing" in frozen:
        missing_common += ["--epochs", str(args.frozen_epochs)]
    methods = args.methods.split(",")
    grid_methods = args.grid_methods.split(",") if args.grid_methods else methods
    missing = MissingStudy(pool, args.root, missing_common, BATCH, CLASSES, methods, grid_methods,
                           protocols=PROTOCOLS, method_args=METHODS, grid=CLML_GRID)  # fmt: skip
    mulcon_common = [*common, *data_args(split), *(FROZEN if "mulcon" in frozen else [])]
    mulcon = VocMulcon(pool, args.root, mulcon_common, reference)
    studies = args.studies.split(",")
    if "reference" in studies:
        reference.start()
    if "missing" in studies:
        missing.start()
    if "mulcon" in studies:
        mulcon.start()
    return pool, reference, missing, mulcon, studies


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="folder of the run folders (outside the repository)")
    ap.add_argument("--voc", type=Path, default=Path("../shared/data/voc2007"))
    ap.add_argument("--weights", type=Path, default=Path("../shared/weights/tf_efficientnet_lite0.pth"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="parallel `mlcl train` processes")
    ap.add_argument("--threads", type=int, default=2, help="threads per process")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--frozen", default="missing", help="studies run in the frozen-trunk protocol (train.freeze=all)")
    ap.add_argument("--frozen-epochs", type=int, default=10, help="epochs of a frozen-trunk run (from the cache)")
    ap.add_argument("--deadline-s", type=float, default=math.inf, help="start no run after this many seconds")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the bases")
    ap.add_argument("--grid-methods", default="", help="bases whose mean hold-out mAP picks CLML's weight (all)")
    ap.add_argument("--studies", default="reference,missing,mulcon")
    ap.add_argument("--tables-only", action="store_true", help="write the tables of the finished runs; start none")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    pool, reference, missing, mulcon, studies = build(args)

    def on_done(job: Job, ok: bool) -> None:
        if job.out.parent.name == "missing":
            missing.done(job, ok)

    if args.tables_only:
        pool.replay(on_done)
        pool.skipped = [j.name for j in pool.queue if not finished(j.out)]
    else:
        pool.run(on_done)
    grid = {m: {str(k): v for k, v in g.items()} for m, g in missing.grid.items()}
    state = {"grid": grid, "chosen": missing.chosen, "not_run": pool.skipped}
    (args.root / "grid.json").write_text(json.dumps(state, indent=1))
    text = reference.tables() if "reference" in studies else ""
    text += tables(args.root, missing) if "missing" in studies else ""
    text += mulcon.table() if "mulcon" in studies else ""
    text += f"\n{len(pool.skipped)} runs not run; total {time.monotonic() - t0:.0f} s\n"
    (args.root / "tables.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
