"""Write the seeded held-out split of MIML used by the README and BENCHMARKS.md.

    python benchmarks/miml_split.py --miml ../shared/data/miml --out runs/miml_split --seed 0

Writes ``train.csv`` (80 %) and ``heldout.csv`` (20 %) in mlcl's CSV format, with image paths relative to the
output folder (file names in a CSV resolve against its folder when it has no ``images/`` subfolder), so the MIML
folder and the split folder can move together. The images are read in place; nothing is copied.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlcl.data.csv_format import read_csv_labels, write_csv_labels
from mlcl.data.split import holdout_split


def make_split(miml: Path, out: Path, seed: int = 0, fraction: float = 0.2) -> tuple[Path, Path]:
    data = read_csv_labels(miml / "labels.csv")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "images").is_dir():
        raise SystemExit(f"{out}/images exists: the written CSVs' relative paths would resolve inside it")
    base = out.resolve()
    # paths relative to the CSVs' folder, with "/" separators
    data.ids = [Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in data.items]
    train_idx, held_idx = holdout_split(len(data), fraction, seed)
    write_csv_labels(out / "train.csv", data.subset(train_idx))
    write_csv_labels(out / "heldout.csv", data.subset(held_idx))
    return out / "train.csv", out / "heldout.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--miml", type=Path, default=Path("../shared/data/miml"))
    ap.add_argument("--out", type=Path, default=Path("runs/miml_split"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=0.2)
    a = ap.parse_args()
    tr, he = make_split(a.miml, a.out, a.seed, a.fraction)
    print(f"wrote {tr} and {he}")


if __name__ == "__main__":
    main()
