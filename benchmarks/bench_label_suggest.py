"""Finding hidden labels on MIML: `mlcl labels suggest` against the truth, the in-sample ranking and cleanlab.

The 1200 training photos of the README's MIML split get hidden labels whose truth is known:

* ``single-positive``: one positive kept per image, every other entry unknown (-1). Candidates: the unknown entries.
* ``drop:0.5``: each positive hidden with probability 0.5. mlcl's ``drop`` protocol hides positives only, so its
  unknown entries are all positives and ranking them is trivial; the benchmark therefore writes the hidden positives
  as **0** (an annotator who missed them: the situation cleanlab addresses), and the candidates are the observed
  negatives (``--check-observed``).

For each protocol and seed, through the command line:

1. ``mlcl labels suggest --folds K`` (cross-fitted, out-of-sample scores), with the fold models' options below;
2. ``mlcl train`` on all 1200 images (the baseline: held-out mAP, and the model of the in-sample ranking),
   then ``mlcl labels suggest --from`` that run (in-sample scores);
3. cleanlab's multi-label ranking on the same cross-fitted probabilities: ``get_label_quality_scores`` (the image
   ranking of ``find_label_issues``; an annotator then checks each image's candidate entries, most probable first)
   and ``get_label_quality_scores_per_class`` (entry level); given labels = the observed positives;
4. precision@k and recall@k of the hidden positives among the first k candidates (k = 100, 500, 1000, the number
   hidden) and the AUROC over the candidates;
5. the loop a user runs: the first k suggestions, or k random candidates, answered by the truth (the annotator:
   ``mlcl labels apply --accept rows:FILE`` with the true values), ``mlcl train`` again, held-out mAP gain per
   annotated entry.

cleanlab is AGPL-3.0: it is a comparison here only, never a dependency of mlcl (not in pyproject.toml); install
it into the environment by hand for this script (``pip install cleanlab``).

    python benchmarks/bench_label_suggest.py --out runs/label_bench --seeds 0 1 2
    python benchmarks/bench_label_suggest.py --out runs/label_bench --tables-only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import mlcl  # noqa: E402
from _runs import finished, run_train  # noqa: E402
from miml_split import make_split  # noqa: E402
from mlcl.data.csv_format import read_csv_labels, write_csv_labels  # noqa: E402
from mlcl.data.missing import apply_missing  # noqa: E402
from mlcl.report.scores import load_scores  # noqa: E402

KS = (100, 500, 1000)
PROTOCOLS = ("single-positive", "drop:0.5")


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(mlcl.__file__).parents[1]), env.get("PYTHONPATH")) if p)
    return env


def _mlcl(args: list[str], log: Path, threads: int) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ mlcl " + " ".join(args) + "\n")
        f.flush()
        rc = subprocess.run(
            [sys.executable, "-m", "mlcl", *args], stdout=f, stderr=subprocess.STDOUT, env=_env(threads)
        )
    if rc.returncode:
        raise SystemExit(f"mlcl {' '.join(args[:2])} failed (exit {rc.returncode}); see {log}")


def _labels(split: Path, folder: Path, protocol: str, seed: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """The hidden-label CSV in ``folder``: (path, truth (N, C), given (N, C))."""
    data = read_csv_labels(split / "train.csv")
    truth = data.targets.numpy().astype(np.int8)
    hidden = apply_missing(data.targets, protocol, seed).numpy().astype(np.int8)
    if protocol.startswith("drop"):
        hidden[hidden == -1] = 0  # missed positives written as negatives (see the module docstring)
    folder.mkdir(parents=True, exist_ok=True)
    data.ids = [Path(os.path.relpath(Path(p).resolve(), folder.resolve())).as_posix() for p in data.items]
    import torch

    write_csv_labels(folder / "labels.csv", data.with_targets(torch.from_numpy(hidden)))
    return folder / "labels.csv", truth, hidden


def _ranked(csv_path: Path, ids: list[str], names: list[str], candidate: np.ndarray) -> list[tuple[int, int]]:
    """The candidate entries of a suggestions file, in rank order."""
    row, col = {i: k for k, i in enumerate(ids)}, {n: j for j, n in enumerate(names)}
    with open(csv_path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["rank"]))
    out = [(row[r["filename"]], col[r["class"]]) for r in rows]
    return [(i, j) for i, j in out if candidate[i, j]]


def _cleanlab(probs: np.ndarray, given: np.ndarray, candidate: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    from cleanlab.multilabel_classification.rank import get_label_quality_scores, get_label_quality_scores_per_class

    labels = [np.nonzero(r == 1)[0].tolist() for r in given]
    image_q = get_label_quality_scores(labels, probs)
    image_order = []
    for i in np.argsort(image_q, kind="stable"):
        js = [j for j in np.argsort(-probs[i], kind="stable") if candidate[i, j]]
        image_order += [(int(i), int(j)) for j in js]
    per = np.asarray(get_label_quality_scores_per_class(labels, probs))
    flat = [(float(per[i, j]), int(i), int(j)) for i, j in zip(*np.nonzero(candidate), strict=True)]
    return {"cleanlab (images)": image_order, "cleanlab (entries)": [(i, j) for _, i, j in sorted(flat)]}


def _metrics(order: list[tuple[int, int]], positive: np.ndarray, n_hidden: int) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    hits = np.array([positive[i, j] for i, j in order], dtype=np.float64)
    out: dict[str, float] = {}
    for k in (*KS, n_hidden):
        key = "hidden" if k == n_hidden else str(k)
        out[f"P@{key}"] = float(hits[:k].mean())
        out[f"R@{key}"] = float(hits[:k].sum() / n_hidden)
    out["AUROC"] = float(roc_auc_score(hits, -np.arange(len(hits))))
    return out


def _answered(order: list[tuple[int, int]], truth: np.ndarray, ids: list[str], names: list[str], path: Path) -> None:
    """A rows file: these entries with their TRUE values (the annotator's answers)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "class", "suggested"])
        for i, j in order:
            w.writerow([ids[i], names[j], int(truth[i, j])])


def run_task(a: argparse.Namespace, protocol: str, seed: int) -> dict:
    folder = a.out / protocol.replace(":", "") / f"s{seed}"
    done = folder / "results.json"
    if done.is_file():
        cached = json.loads(done.read_text())
        if all(f"mlcl (cross-fitted, {name})" in cached["ranking"] for name, _ in a.variant):
            return cached
    t0 = time.perf_counter()
    labels, truth, given = _labels(a.out / "split", folder, protocol, seed)
    log = folder / "commands.log"
    check = ["--check-observed"] if protocol.startswith("drop") else []
    train = [
        "--backbone", "tf_efficientnet_lite0", "--weights", str(a.weights), "--image-size", str(a.image_size),
        "--epochs", str(a.epochs), "--seed", str(seed), "--loss", a.loss, "--workers", "0", "--no-progress",
        "-o", "run.tensorboard=false", "-o", f"train.freeze={a.freeze}", *shlex.split(a.extra),
    ]  # fmt: skip
    xfit = folder / "xfit.csv"
    if not xfit.with_suffix(".json").is_file():
        _mlcl(["labels", "suggest", "--data", str(labels), *train, "--folds", str(a.folds), *check,
               "--out", str(xfit), "--overwrite"], log, a.threads)  # fmt: skip
    heldout = str(a.out / "split" / "heldout.csv")
    base = folder / "base"
    if not finished(base):
        run_train(["--data", str(labels), "--test-data", heldout, *train], base, threads=a.threads)
    insample = folder / "insample.csv"
    if not insample.with_suffix(".json").is_file():
        _mlcl(["labels", "suggest", "--data", str(labels), "--device", "cpu", "--workers", "0", "--from", str(base),
               *check, "--out", str(insample), "--overwrite", "--no-page"], log, a.threads)  # fmt: skip
    s = load_scores(xfit.with_name("xfit.scores.npz"))
    ids, names = s.ids, s.class_names
    candidate = given == (0 if protocol.startswith("drop") else -1)
    positive = candidate & (truth == 1)
    n_hidden = int(positive.sum())
    rankings = {
        "mlcl (cross-fitted)": _ranked(xfit, ids, names, candidate),
        "in-sample scores": _ranked(insample, ids, names, candidate),
        **_cleanlab(s.scores.astype(np.float64), given, candidate),
    }
    for name, extra in a.variant:
        tag = "xfit-" + "".join(c if c.isalnum() else "-" for c in name.lower())
        out = folder / f"{tag}.csv"
        if not out.with_suffix(".json").is_file():
            _mlcl(["labels", "suggest", "--data", str(labels), *train, *shlex.split(extra), "--folds", str(a.folds),
                   *check, "--out", str(out), "--overwrite", "--no-page"], log, a.threads)  # fmt: skip
        rankings[f"mlcl (cross-fitted, {name})"] = _ranked(out, ids, names, candidate)
    rng = np.random.default_rng(1000 + seed)
    cand = [(int(i), int(j)) for i, j in zip(*np.nonzero(candidate), strict=True)]
    rankings["random"] = [cand[k] for k in rng.permutation(len(cand))]
    result: dict = {
        "protocol": protocol, "seed": seed, "candidates": len(cand), "hidden": n_hidden,
        "ranking": {name: _metrics(order, positive, n_hidden) for name, order in rankings.items()},
    }  # fmt: skip
    meta = json.loads(xfit.with_suffix(".json").read_text())
    result["estimate"] = {
        e["name"]: {"estimate": e["estimate"], "method": e["method"], "true": int(positive[:, j].sum())}
        for j, e in enumerate(meta["estimates"])
    }
    base_metrics = json.loads((base / "metrics.json").read_text())
    result["retrain"] = {"base": base_metrics["mAP"]}
    for k in a.retrain_k:
        for name, order in (("top", rankings["mlcl (cross-fitted)"]), ("random", rankings["random"])):
            tag = f"{name}{k}"
            run = folder / f"retrain-{tag}"
            if not finished(run):
                rows, completed = folder / f"{tag}.rows.csv", folder / f"completed-{tag}.csv"
                _answered(order[:k], truth, ids, names, rows)
                _mlcl(["labels", "apply", str(xfit), "--accept", f"rows:{rows}", "--out", str(completed),
                       "--overwrite"], log, a.threads)  # fmt: skip
                run_train(["--data", str(completed), "--test-data", heldout, *train], run, threads=a.threads)
            result["retrain"][tag] = json.loads((run / "metrics.json").read_text())["mAP"]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    done.write_text(json.dumps(result, indent=1))
    return result


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = np.asarray(values, dtype=np.float64) * scale
    spread = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f}" + (f" ± {spread:.{digits}f}" if spread > 0 else "")


def tables(results: list[dict], retrain_k: list[int]) -> str:
    out = []
    for protocol in PROTOCOLS:
        rs = [r for r in results if r["protocol"] == protocol]
        if not rs:
            continue
        seeds = ", ".join(str(r["seed"]) for r in rs)
        out.append(
            f"\n**{protocol}** (seeds {seeds}; {_ms([r['candidates'] for r in rs], 1, 0)} candidate entries, "
            f"{_ms([r['hidden'] for r in rs], 1, 0)} hidden positives among them; %)\n"
        )
        keys = [f"P@{k}" for k in KS] + ["P@hidden"] + [f"R@{k}" for k in KS] + ["R@hidden", "AUROC"]
        out.append("| ranking | " + " | ".join(keys) + " |")
        out.append("|---|" + "---|" * len(keys))
        names = list(dict.fromkeys(n for r in rs for n in r["ranking"]))
        for name in names:
            have = [r for r in rs if name in r["ranking"]]
            label = name if len(have) == len(rs) else f"{name} (seed {', '.join(str(r['seed']) for r in have)})"
            out.append(f"| {label} | " + " | ".join(_ms([r["ranking"][name][k] for r in have]) for k in keys) + " |")
        if protocol == "single-positive":
            names = list(rs[0]["estimate"])
            out.append("\nEstimated missing positives per class (sum over the unknown entries) against the truth:\n")
            out.append("| | " + " | ".join(names) + " |")
            out.append("|---|" + "---|" * len(names))
            out.append(
                "| estimate | "
                + " | ".join(_ms([r["estimate"][n]["estimate"] for r in rs], 1, 0) for n in names)
                + " |"
            )
            out.append(
                "| hidden | " + " | ".join(_ms([r["estimate"][n]["true"] for r in rs], 1, 0) for n in names) + " |"
            )
        out.append("\nRetraining on the annotated entries (held-out mAP %, and gain per 100 annotated entries):\n")
        out.append("| annotated | mAP | gain | gain per 100 entries |")
        out.append("|---|---|---|---|")
        out.append(f"| none (baseline) | {_ms([r['retrain']['base'] for r in rs], digits=2)} | | |")
        for k in retrain_k:
            for tag, label in ((f"top{k}", f"first {k} suggestions"), (f"random{k}", f"{k} random candidates")):
                if not all(tag in r["retrain"] for r in rs):
                    continue
                gain = [r["retrain"][tag] - r["retrain"]["base"] for r in rs]
                out.append(
                    f"| {label} | {_ms([r['retrain'][tag] for r in rs], digits=2)} | {_ms(gain, digits=2)} | "
                    f"{_ms([g * 100 / k for g in gain], digits=3)} |"
                )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/label_bench"))
    ap.add_argument("--miml", type=Path, default=Path("../shared/data/miml"))
    ap.add_argument("--weights", type=Path, default=Path("../shared/weights/tf_efficientnet_lite0.pth"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--loss", default="bce-an")
    ap.add_argument("--freeze", default="all", help="train.freeze of every model (the frozen-trunk protocol)")
    ap.add_argument("--extra", default="", help="more `mlcl train` arguments of every model, one string")
    ap.add_argument(
        "--variant",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "ARGS"),
        help="another cross-fit whose fold models add ARGS (e.g. 'EM + APL' '--loss em-apl'); ranking only",
    )
    ap.add_argument("--retrain-k", type=int, nargs="*", default=[100])
    ap.add_argument("--jobs", type=int, default=1, help="tasks (protocol x seed) run in parallel")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tables-only", action="store_true")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not (a.out / "split" / "train.csv").is_file():
        make_split(a.miml, a.out / "split", 0)
    tasks = [(p, s) for s in a.seeds for p in a.protocols]
    if a.tables_only:
        results = [json.loads(f.read_text()) for f in sorted(a.out.glob("*/s*/results.json"))]
    else:
        with ThreadPoolExecutor(a.jobs) as pool:
            results = list(pool.map(lambda t: run_task(a, *t), tasks))
    print(tables(results, a.retrain_k))


if __name__ == "__main__":
    main()
