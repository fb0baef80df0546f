"""Peak memory of the label-level linear probe: mlcl's slice-by-slice fit against a whole-array float64 fit.

python benchmarks/bench_probe_memory.py --n 4000 --classes 80 --dim 256

The mulcon head's probe (`mlcl.engine.probe.fit_linear_probe` on `(N, C, d)` label embeddings) fits one logistic
regression per class. Each row of the table runs in a fresh process and reports its peak resident memory
(`ru_maxrss`) above the point where the float32 embeddings exist, in units of that array's size:

* `mlcl (slice by slice)`: the library's fit, which keeps the float32 array and converts one `(N, d)` class slice
  at a time to float64;
* `whole array in float64`: the previous version of the same fit (kept below as the reference), which converted
  the whole array to float64 and took its standard deviation over the whole array at once.

Both fits give the same weights (checked here to 1e-6). The default bound on the array itself is
`mlcl.engine.probe.PROBE_FLOATS` floats (`train.probe_images`), printed with the number of images it allows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _whole_array_fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """The probe as it was before the slice-by-slice fit (per-class `(N, C, d)` case): the reference."""
    from sklearn.linear_model import LogisticRegression

    x = x.astype(np.float64)
    mu = x.mean(0)
    sigma = x.std(0)
    sigma = np.where(sigma > 1e-12 * max(1.0, float(np.abs(x).max())), sigma, 1.0)
    w = np.zeros((y.shape[1], x.shape[-1]))
    b = np.zeros(y.shape[1])
    for k in range(y.shape[1]):
        xs = (x[:, k] - mu[k]) / sigma[k]
        clf = LogisticRegression(C=c, max_iter=max_iter, tol=1e-8).fit(xs, y[:, k] == 1)
        w[k], b[k] = clf.coef_[0], clf.intercept_[0]
    weight = w / sigma
    return weight, b - (weight * mu).sum(-1)


def child(mode: str, n: int, classes: int, dim: int, max_iter: int) -> None:
    import torch

    from mlcl.engine.probe import fit_linear_probe

    rng = np.random.default_rng(0)
    y = (rng.random((n, classes)) < 0.1).astype(np.int8)
    x = rng.standard_normal((n, classes, dim), dtype=np.float32)
    x += 0.5 * y[:, :, None]  # in place: no temporary of the array's size before the baseline
    import sklearn.linear_model  # noqa: F401  (both fits start with the same modules loaded)

    base = _rss_mib()
    if mode == "mlcl":
        weight, bias = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y), max_iter=max_iter)
        weight, bias = weight.numpy(), bias.numpy()
    else:
        weight, bias = _whole_array_fit(x, y, 0.01, max_iter)
    json.dump({"extra_mib": _rss_mib() - base, "array_mib": x.nbytes / 2**20, "weight": weight[:2].tolist(),
               "bias": bias[:2].tolist()}, sys.stdout)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="images")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--dim", type=int, default=256, help="label-embedding width d")
    p.add_argument(
        "--max-iter", type=int, default=100, help="L-BFGS iterations per class (memory does not depend on it)"
    )
    p.add_argument("--child", choices=["mlcl", "whole"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.n, args.classes, args.dim, args.max_iter)
        return
    results = {}
    for mode in ("mlcl", "whole"):
        cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--classes", str(args.classes),
               "--dim", str(args.dim), "--max-iter", str(args.max_iter)]  # fmt: skip
        results[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    np.testing.assert_allclose(results["mlcl"]["weight"], results["whole"]["weight"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results["mlcl"]["bias"], results["whole"]["bias"], rtol=1e-6, atol=1e-6)
    array = results["mlcl"]["array_mib"]
    print(f"(N, C, d) = ({args.n}, {args.classes}, {args.dim}): float32 embeddings {array:.0f} MiB")
    print("| fit | peak memory above the embeddings | x the embeddings |")
    print("|---|---:|---:|")
    for mode, label in (("mlcl", "mlcl (slice by slice)"), ("whole", "whole array in float64")):
        extra = results[mode]["extra_mib"]
        print(f"| {label} | {extra:.0f} MiB | {extra / array:.2f} |")
    from mlcl.engine.probe import PROBE_FLOATS

    per_image = args.classes * args.dim
    print(f"default bound PROBE_FLOATS = {PROBE_FLOATS} floats ({PROBE_FLOATS * 4 / 2**30:.0f} GiB in float32): "
          f"{max(1, PROBE_FLOATS // per_image)} images at C x d = {per_image}")  # fmt: skip


if __name__ == "__main__":
    main()
