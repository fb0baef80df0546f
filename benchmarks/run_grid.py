"""Run a grid of end-to-end ``mlcl train`` runs (named specs x seeds) in parallel, then ``mlcl compare`` them.

    PYTHONPATH=src python benchmarks/run_grid.py GRID.yaml --out runs/grid --seeds 0 1 2 --jobs 2 \\
        --threads-per-job 1 --device cpu [--pair clml bce] [--baseline bce]

``GRID.yaml`` (or ``.json``) is a list of named specs, each a list of ``mlcl train`` arguments::

    - name: bce
      args: [--data, builtin, --epochs, "4", --loss, bce]
    - name: clml
      args: [--data, builtin, --epochs, "4", --loss, bce+clml]

Each (spec, seed) trains into ``OUT/<name>-s<seed>/`` with ``--seed``, ``--out``, ``--device`` and
``--no-progress`` added, ``--jobs`` at a time, each process limited to ``--threads-per-job`` threads
(``OMP_NUM_THREADS``). A run whose folder already holds ``metrics.json`` is skipped, and one that stopped with a
``last.pt`` is continued (``--resume``), so an interrupted grid is resumed by running the same command again. Each
run's output goes to ``OUT/<name>-s<seed>.log``; its wall time and exit status to ``OUT/grid.json``. At the end
``mlcl compare`` groups the finished runs by name (the folder without its seed) and writes ``OUT/compare.html``
and ``OUT/compare.md``: against ``--baseline`` (a spec name; default the first spec), or each ``--pair SPEC
CONTROL`` against its control. The exit status is 1 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runs import finished, run_train  # noqa: E402
from mlcl.report.compare import write_compare  # noqa: E402


def load_grid(path: Path) -> list[tuple[str, list[str]]]:
    """The ``(name, mlcl train arguments)`` specs of a grid file (checked: unique names, lists of strings)."""
    specs = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    if not isinstance(specs, list) or not specs:
        raise SystemExit(f"{path}: expected a non-empty list of {{name, args}} specs")
    out: list[tuple[str, list[str]]] = []
    for i, spec in enumerate(specs):
        name, args = (spec.get("name"), spec.get("args")) if isinstance(spec, dict) else (None, None)
        if not isinstance(name, str) or not name or "/" in name or not isinstance(args, list):
            raise SystemExit(f"{path}: spec {i + 1} needs a name (no '/') and a list of arguments: {spec!r}")
        if name in {n for n, _ in out}:
            raise SystemExit(f"{path}: the name {name!r} is used twice")
        for flag in ("--seed", "--out", "--resume"):
            if flag in args:
                raise SystemExit(f"{path}: spec {name!r}: {flag} is set by the grid")
        out.append((name, [str(a) for a in args]))
    return out


def run_one(name: str, args: list[str], seed: int, out: Path, device: str, threads: int) -> dict[str, Any]:
    folder = out / f"{name}-s{seed}"
    control = ["--device", device, "--no-progress"]
    rc, wall = run_train([*args, "--seed", str(seed)], folder, control=control, threads=threads)
    status = "done" if rc == 0 and finished(folder) else "failed"
    print(f"{folder.name}: {status} in {wall} s" + ("" if rc == 0 else f" (exit {rc}, see {folder}.log)"), flush=True)
    return {"run": folder.name, "spec": name, "seed": seed, "status": status, "exit": rc, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="YAML/JSON list of {name, args} specs")
    ap.add_argument("--out", type=Path, required=True, help="folder of the run folders and the comparison")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads-per-job", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS)")
    ap.add_argument("--device", default="cpu", help="passed to every run (auto, cpu, cuda, cuda:N)")
    ap.add_argument("--baseline", help="the spec the others are compared with (default: the first)")
    ap.add_argument(
        "--pair", nargs=2, action="append", default=[], metavar=("SPEC", "CONTROL"), help="instead of a baseline"
    )
    a = ap.parse_args(argv)
    specs = load_grid(a.grid)
    names = [n for n, _ in specs]
    for n in [a.baseline or names[0], *(x for p in a.pair for x in p)]:
        if n not in names:
            raise SystemExit(f"--baseline/--pair {n}: not a spec of {a.grid} ({', '.join(names)})")
    a.out.mkdir(parents=True, exist_ok=True)
    todo = [(n, args, s) for n, args in specs for s in a.seeds if not finished(a.out / f"{n}-s{s}")]
    print(f"{len(specs) * len(a.seeds) - len(todo)} run(s) already finished, {len(todo)} to run", flush=True)
    record_path = a.out / "grid.json"
    records: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = [pool.submit(run_one, n, args, s, a.out, a.device, a.threads_per_job) for n, args, s in todo]
        for f in futures:
            r = f.result()
            records[r["run"]] = r
            record_path.write_text(json.dumps(records, indent=2))
    done = [a.out / f"{n}-s{s}" for n, _ in specs for s in a.seeds if finished(a.out / f"{n}-s{s}")]
    if done:
        pairs = [(f"name={x}", f"name={y}") for x, y in a.pair]
        baseline = None if pairs else f"name={a.baseline or names[0]}"
        _, table = write_compare(
            done, a.out / "compare.html", baseline=baseline, group_by="name", pairs=pairs, markdown=a.out / "compare.md"
        )
        print("\n" + table + f"\nwritten to {a.out / 'compare.html'} and {a.out / 'compare.md'}")
    failed = sorted(r["run"] for r in records.values() if r["status"] == "failed" and not finished(a.out / r["run"]))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
