"""The built-in multi-label dataset ``builtin``: canvases of real handwritten digits, generated in memory.

Source: the 1797 handwritten digits of scikit-learn (``sklearn.datasets.load_digits``, 8x8, 17 grey levels),
which ship with scikit-learn, so nothing is downloaded.

Recipe (all constants are module-level; see ``docs/data.md`` for the resulting statistics):

1. The 1797 source images are split once, stratified by digit, with ``numpy.random.default_rng(SOURCE_SEED)``:
   :data:`SOURCE_FRACTIONS` (60/15/25 %) go to train/val/test, so the three splits never share a source digit.
2. Each split draws :data:`NUM_IMAGES` canvases with its own seed (:data:`SPLIT_SEEDS`). Per canvas:

   * the number of distinct digits ``k`` in 1..4 follows :data:`CARDINALITY_PROBS`;
   * the digits are drawn one at a time: after the first, with probability :data:`FRIEND_PROB` the next is the
     "friend" (:data:`FRIEND_PAIRS`) of a digit already drawn, if one is still missing; otherwise it is uniform
     over the digits not yet drawn. This gives the labels a co-occurrence structure;
   * with probability :data:`DUPLICATE_PROB` (when ``k < 4``) one of the digits appears a second time (another
     source image of the same digit); a digit present twice is still one label;
   * every instance is a random source image of its digit from the split, upscaled (bilinear) to a random size in
     :data:`DIGIT_SIZE_RANGE`, given a random colour, and placed in its own cell of a 2x2 grid with a random
     offset (it may overhang its cell by 2 px);
   * the background is a random base colour plus a smooth random colour field and grey pixel noise; 70 % of the
     canvases are dark with bright digits, the rest light with dark digits; up to :data:`MAX_FRAGMENTS` clutter
     strokes (random 4x4 crops of source digits of the split, upscaled) are drawn at reduced opacity.

The labels are the set of digits drawn (classes ``"0"``..``"9"``), every entry known (no ``-1``). Generation is
deterministic (NumPy ``Generator``, fixed order of draws) and cached per process.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mlcl.data.labelset import MultiLabelSet
from mlcl.errors import ConfigError

__all__ = [
    "CANVAS_SIZE",
    "CARDINALITY_PROBS",
    "CLASS_NAMES",
    "DIGIT_SIZE_RANGE",
    "DUPLICATE_PROB",
    "FRIEND_PAIRS",
    "FRIEND_PROB",
    "MAX_FRAGMENTS",
    "NUM_IMAGES",
    "SOURCE_FRACTIONS",
    "SOURCE_SEED",
    "SPLITS",
    "SPLIT_SEEDS",
    "builtin_statistics",
    "load_builtin",
    "source_split",
]

Split = Literal["train", "val", "test"]

#: The three splits, in the order their source digits are allocated.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Number of canvases per split.
NUM_IMAGES: dict[str, int] = {"train": 4000, "val": 600, "test": 1000}
#: Fractions of each digit's source images given to train / val / test.
SOURCE_FRACTIONS: tuple[float, float, float] = (0.60, 0.15, 0.25)
#: Seed of the stratified split of the source images.
SOURCE_SEED = 0
#: Seed of each split's canvas generator.
SPLIT_SEEDS: dict[str, int] = {"train": 1001, "val": 1002, "test": 1003}
#: Side of the square RGB canvas, in pixels.
CANVAS_SIZE = 48
#: Inclusive range of the side of an upscaled digit, in pixels.
DIGIT_SIZE_RANGE: tuple[int, int] = (14, 20)
#: Probabilities of 1, 2, 3 and 4 distinct digits per canvas.
CARDINALITY_PROBS: tuple[float, float, float, float] = (0.40, 0.35, 0.17, 0.08)
#: Digit pairs that tend to appear together.
FRIEND_PAIRS: tuple[tuple[int, int], ...] = ((1, 7), (3, 8), (4, 9))
#: Probability that a further digit is the friend of one already drawn (when such a friend is missing).
FRIEND_PROB = 0.7
#: Probability that one digit of a canvas with fewer than 4 digits is drawn twice.
DUPLICATE_PROB = 0.15
#: Up to this many clutter strokes per canvas (uniform in 0..MAX_FRAGMENTS).
MAX_FRAGMENTS = 2
#: Class names, in column order.
CLASS_NAMES: list[str] = [str(d) for d in range(10)]

_DARK_PROB = 0.7
_NOISE_SD = 0.05
_FRAGMENT_ALPHA = 0.6
_OVERHANG = 2
_CELL = CANVAS_SIZE // 2
_FRIEND = {a: b for a, b in FRIEND_PAIRS} | {b: a for a, b in FRIEND_PAIRS}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as float32 ``(1797, 8, 8)`` in ``[0, 1]`` and int64 labels ``(1797,)``.

    Read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixel values in 0-16, then
    the digit, per row), the data of ``sklearn.datasets.load_digits``, without importing ``sklearn.datasets``
    (about 2 s of every ``mlcl`` command on the built-in data).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the built-in dataset needs scikit-learn's digits: pip install scikit-learn")
    table = np.loadtxt(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    images = (table[:, :-1].astype(np.float32).reshape(-1, 8, 8) / 16.0).clip(0.0, 1.0)
    return images, table[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _source_split_cached() -> dict[str, np.ndarray]:
    _, labels = _digits()
    rng = np.random.default_rng(SOURCE_SEED)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_train = round(SOURCE_FRACTIONS[0] * len(idx))
        n_val = round(SOURCE_FRACTIONS[1] * len(idx))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    out = {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}
    for arr in out.values():
        arr.flags.writeable = False
    return out


def source_split(split: str) -> np.ndarray:
    """Indices (into ``sklearn.datasets.load_digits()``) of the source images reserved for ``split``."""
    return _source_split_cached()[_check_split(split)].copy()


def _check_split(split: str) -> str:
    if split not in NUM_IMAGES:
        raise ConfigError(f"builtin dataset: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


@functools.cache
def _resize_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear interpolation weights ``(out_size, in_size)`` (half-pixel centres, edge clamped)."""
    x = (np.arange(out_size, dtype=np.float64) + 0.5) * in_size / out_size - 0.5
    x = x.clip(0.0, in_size - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = x - lo
    w = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(w, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(w, (np.arange(out_size), hi), frac)
    return w.astype(np.float32)


def _upscale(patch: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upscale of a square ``(h, h)`` patch to ``(size, size)``."""
    w = _resize_matrix(size, patch.shape[0])
    return w @ patch @ w.T


def _draw_labels(k: int, u_next: np.ndarray, u_pick: np.ndarray) -> list[int]:
    """Draw ``k`` distinct digits from pre-drawn uniforms (``u_next``, ``u_pick``: 4 numbers each)."""
    labels = [int(u_pick[0] * 10)]
    for j in range(1, k):
        friends = sorted({_FRIEND[d] for d in labels if d in _FRIEND} - set(labels))
        if friends and u_next[j] < FRIEND_PROB:
            labels.append(friends[int(u_pick[j] * len(friends))])
        else:
            rest = [d for d in range(10) if d not in labels]
            labels.append(rest[int(u_pick[j] * len(rest))])
    return labels


def _blend(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, top: int, left: int) -> None:
    """Alpha-composite a ``colour`` with mask ``alpha`` ``(s, s)`` onto ``canvas`` at ``(top, left)``, clipped."""
    s = alpha.shape[0]
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + s, CANVAS_SIZE), min(left + s, CANVAS_SIZE)
    a = alpha[t0 - top : t1 - top, l0 - left : l1 - left, None]
    region = canvas[t0:t1, l0:l1]
    region *= 1.0 - a
    region += a * colour


@functools.cache
def _generate(split: str) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, ...], ...]]:
    """Images ``(N, H, W, 3)`` uint8, targets ``(N, 10)`` int8, and the source indices drawn per canvas."""
    images, labels = _digits()
    sources = _source_split_cached()[split]
    by_digit = [sources[labels[sources] == d] for d in range(10)]
    n, size = NUM_IMAGES[split], CANVAS_SIZE
    rng = np.random.default_rng(SPLIT_SEEDS[split])

    # All random numbers are drawn up front, in this fixed order, so the stream never depends on the branches.
    cardinality = rng.choice(4, size=n, p=np.asarray(CARDINALITY_PROBS)) + 1
    u_next = rng.random((n, 4))
    u_pick = rng.random((n, 4))
    dup = rng.random(n) < DUPLICATE_PROB
    u_dup = rng.random(n)
    u_source = rng.random((n, 4))
    digit_size = rng.integers(DIGIT_SIZE_RANGE[0], DIGIT_SIZE_RANGE[1] + 1, size=(n, 4))
    cells = np.argsort(rng.random((n, 4)), axis=1)
    u_offset = rng.random((n, 4, 2))
    dark = rng.random(n) < _DARK_PROB
    base = rng.uniform(0.0, 0.4, size=(n, 3)).astype(np.float32)
    ink = rng.uniform(0.6, 1.0, size=(n, 4, 3)).astype(np.float32)
    field = rng.normal(0.0, 0.10, size=(n, 4, 4, 3)).astype(np.float32)
    n_fragments = rng.integers(0, MAX_FRAGMENTS + 1, size=n)
    u_fragment = rng.random((n, MAX_FRAGMENTS, 6))
    frag_ink = rng.uniform(0.6, 1.0, size=(n, MAX_FRAGMENTS, 3)).astype(np.float32)
    noise_seed = int(rng.integers(0, 2**63 - 1))

    base = np.where(dark[:, None], base, 1.0 - base)
    ink = np.where(dark[:, None, None], ink, 1.0 - ink)
    frag_ink = np.where(dark[:, None, None], frag_ink, 1.0 - frag_ink)
    w_field = _resize_matrix(size, 4)

    out = np.empty((n, size, size, 3), dtype=np.uint8)
    targets = np.zeros((n, 10), dtype=np.int8)
    drawn: list[tuple[int, ...]] = []
    noise_rng = np.random.default_rng(noise_seed)
    chunk = 500
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        smooth = (w_field @ field[start:stop].transpose(0, 3, 1, 2) @ w_field.T).transpose(0, 2, 3, 1)
        canvases = noise_rng.standard_normal(size=(stop - start, size, size, 1), dtype=np.float32)
        canvases *= np.float32(_NOISE_SD)
        canvases = canvases + smooth
        canvases += base[start:stop, None, None, :]
        for i in range(start, stop):
            canvas = canvases[i - start]
            for f in range(n_fragments[i]):
                uf = u_fragment[i, f]
                src = sources[int(uf[0] * len(sources))]
                r, c = int(uf[1] * 5), int(uf[2] * 5)
                s = 8 + int(uf[3] * 3)
                alpha = _upscale(images[src, r : r + 4, c : c + 4], s) * _FRAGMENT_ALPHA
                _blend(canvas, alpha, frag_ink[i, f], int(uf[4] * (size - s + 1)), int(uf[5] * (size - s + 1)))
            digits = _draw_labels(int(cardinality[i]), u_next[i], u_pick[i])
            if dup[i] and len(digits) < 4:
                digits.append(digits[int(u_dup[i] * len(digits))])
            chosen: list[int] = []
            for j, d in enumerate(digits):
                pool = by_digit[d]
                pick = int(u_source[i, j] * len(pool))
                if d in digits[:j]:  # the second instance of a digit uses another source image
                    first = int(np.flatnonzero(pool == chosen[digits.index(d)])[0])
                    pick = (first + 1 + int(u_source[i, j] * (len(pool) - 1))) % len(pool)
                src = int(pool[pick])
                chosen.append(src)
                s = int(digit_size[i, j])
                cy, cx = divmod(int(cells[i, j]), 2)
                span = _CELL - s + 2 * _OVERHANG + 1
                top = cy * _CELL - _OVERHANG + int(u_offset[i, j, 0] * span)
                left = cx * _CELL - _OVERHANG + int(u_offset[i, j, 1] * span)
                top = min(max(top, 0), size - s)
                left = min(max(left, 0), size - s)
                _blend(canvas, _upscale(images[src], s).clip(0.0, 1.0), ink[i, j], top, left)
                targets[i, d] = 1
            drawn.append(tuple(chosen))
        np.clip(canvases, 0.0, 1.0, out=canvases)
        canvases *= np.float32(255.0)
        canvases += np.float32(0.5)
        out[start:stop] = canvases.astype(np.uint8)  # truncation after +0.5: round half up
    out.flags.writeable = False
    targets.flags.writeable = False
    return out, targets, tuple(drawn)


def load_builtin(split: Split | str) -> MultiLabelSet:
    """The ``split`` of the built-in digits dataset (see the module docstring for the recipe).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        A :class:`MultiLabelSet` with ``items`` a read-only uint8 array ``(N, 48, 48, 3)``, class names
        ``"0"``..``"9"``, ids ``"builtin/<split>/<i>"``, fully known targets, ``source="builtin"``, and ``meta``
        holding ``split``, ``source_indices`` (int64 array into ``load_digits()``) and ``instances`` (per canvas,
        the tuple of source indices drawn, in drawing order).

    Raises:
        ConfigError: For an unknown split.
    """
    split = _check_split(split)
    images, targets, drawn = _generate(split)
    return MultiLabelSet(
        class_names=list(CLASS_NAMES),
        targets=torch.from_numpy(targets.copy()),
        items=images,
        ids=[f"builtin/{split}/{i}" for i in range(len(images))],
        source="builtin",
        meta={
            "split": split,
            "source_indices": _source_split_cached()[split].copy(),
            "instances": drawn,
            "friend_pairs": FRIEND_PAIRS,
        },
    )


def builtin_statistics(split: Split | str) -> dict:
    """Label statistics of a split: prior, cardinality histogram and the friend pairs' lift.

    Returns:
        ``{"images": N, "prior": [C floats], "mean_labels": float, "cardinality": {k: count},
        "friend_lift": {"a+b": P(a, b) / (P(a) P(b))}}``.
    """
    y = torch.from_numpy(_generate(_check_split(split))[1].astype(np.float64))
    prior = y.mean(dim=0)
    card = y.sum(dim=1).to(torch.int64)
    lift = {}
    for a, b in FRIEND_PAIRS:
        joint = float((y[:, a] * y[:, b]).mean())
        lift[f"{a}+{b}"] = joint / float(prior[a] * prior[b])
    return {
        "images": int(y.shape[0]),
        "prior": [round(float(p), 4) for p in prior],
        "mean_labels": float(card.double().mean()),
        "cardinality": {int(k): int((card == k).sum()) for k in torch.unique(card)},
        "friend_lift": lift,
    }
