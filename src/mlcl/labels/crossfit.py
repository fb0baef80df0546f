"""Out-of-sample scores for every image of a label set: K-fold cross-fitting, or a given run's model.

**Cross-fitting.** The ``N`` images are split into ``K`` folds by a seeded permutation ``pi`` of ``range(N)``:
image ``pi[r]`` goes to fold ``r mod K`` (fold sizes differ by at most one; no stratification). Fold model ``k`` is
an ordinary ``mlcl train`` run (:func:`mlcl.engine.trainer.fit`, the configuration as given, so every training
option applies) whose training data are the other ``K - 1`` folds (of which ``fit`` holds out its usual seeded
validation share for model selection) and whose test data are fold ``k``: the run's ``test_scores.npz`` are the
scores of fold ``k``'s images by a model that never saw them. Every image is scored exactly once. The fold runs
live in ``work_dir/fold<k>/run`` beside their two CSV files (``train.csv``, ``scored.csv``, image paths
absolute); a second call with the same data, configuration, ``K`` and seed reuses the finished folds.

**A given run** (:func:`score_with_run`): its best checkpoint scores every image. Images it trained on get
in-sample scores: biased towards their observed labels (an unknown entry the loss treated as negative scores low),
hence the warning.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcl._io import atomic_write_text
from mlcl.errors import ConfigError, DataError

if TYPE_CHECKING:
    from mlcl.data.labelset import MultiLabelSet
    from mlcl.engine.config import Config

__all__ = ["CROSSFIT_FILE", "FoldRun", "OutOfSampleScores", "cross_fit", "fold_assignment", "score_with_run"]

log = logging.getLogger("mlcl")

#: The file that records what a folds folder was computed from.
CROSSFIT_FILE = "crossfit.json"
_FORMAT = "mlcl-crossfit"
#: Configuration keys that do not change a fold model (left out of the record that decides reuse).
_RUN_CONTROL = ("train.device", "data.num_workers", "run.progress", "run.tensorboard", "run.out", "run.overwrite")


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """The fold of each of ``n`` images: ``fold[pi[r]] = r mod folds``, ``pi`` = ``default_rng(seed).permutation(n)``.

    Returns:
        ``(n,)`` int64 in ``[0, folds)``; fold sizes differ by at most one.

    Raises:
        ConfigError: ``folds`` below 2 or above ``n``.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"--folds must be an integer >= 2, got {folds!r}")
    if folds > n:
        raise ConfigError(f"--folds {folds}: more folds than images ({n})")
    pi = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[pi] = np.arange(n) % folds
    return out


@dataclass
class FoldRun:
    """One fold model: its run folder, the data rows it trained on (with its validation hold-out) and scored."""

    fold: int
    run_dir: Path
    train_rows: np.ndarray
    scored_rows: np.ndarray


@dataclass
class OutOfSampleScores:
    """Probabilities for every image of a label set, and where they came from.

    Attributes:
        probs: ``(N, C)`` float32 probabilities, row ``i`` = image ``i`` of the data.
        fold: ``(N,)`` int64 fold that scored each image (cross-fitting), or ``-1`` (a given run).
        method: ``cross-fit`` or ``run``.
        folds: The fold models (cross-fitting).
        seen: Images the scoring model trained on (0 for cross-fitting).
        source: The folds folder or the run folder.
    """

    probs: np.ndarray
    fold: np.ndarray
    method: str
    folds: list[FoldRun] = field(default_factory=list)
    seen: int = 0
    source: str = ""


def _file_items(data: MultiLabelSet) -> list[str]:
    if not isinstance(data.items, list):
        raise ConfigError(
            f"--data {data.source or 'builtin'}: its images are in memory; label suggestions need image files "
            "(a CSV file or KIND:PATH)"
        )
    return [os.path.abspath(p) for p in data.items]


def _check_config(cfg: Config) -> None:
    if cfg.data.missing != "none":
        raise ConfigError(
            f"--missing {cfg.data.missing}: the suggestions are for the label file's own unknown entries; to hide "
            "labels on purpose, write the hidden file first (`mlcl data simulate-missing`) and pass it as --data"
        )
    if cfg.data.test is not None:
        raise ConfigError(
            f"--test-data {cfg.data.test}: each fold model's test data is its held-out fold; leave --test-data out"
        )


def _stamp(cfg: Config, data: MultiLabelSet, items: list[str], folds: int, seed: int) -> dict[str, Any]:
    """What decides whether a folds folder can be reused: data content, configuration, K and seed."""
    from mlcl.engine.config import config_to_dict

    conf = config_to_dict(cfg)
    for key in _RUN_CONTROL:
        section, name = key.split(".")
        conf.get(section, {}).pop(name, None)
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8") + b"\0")
    digest.update(data.targets.numpy().tobytes())
    return {"format": _FORMAT, "folds": int(folds), "seed": int(seed), "entries": digest.hexdigest(), "config": conf}


def _claim(work_dir: Path, stamp: dict[str, Any], overwrite: bool) -> None:
    """Make ``work_dir`` ours: new, empty, or a cross-fit of the same stamp (reused); else refuse."""
    record = work_dir / CROSSFIT_FILE
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f"--folds-dir {work_dir}: exists and is not a folder")
    if work_dir.is_dir() and any(work_dir.iterdir()):
        if not record.is_file():
            raise ConfigError(
                f"--folds-dir {work_dir}: the folder holds other files (no {CROSSFIT_FILE}); choose another"
            )
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == json.loads(json.dumps(stamp)):
            return  # the same cross-fit: finished folds are reused
        if not overwrite:
            raise ConfigError(
                f"--folds-dir {work_dir}: holds the folds of another cross-fit (other data, options, --folds or seed); "
                "replace them with --overwrite, or choose another folder"
            )
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(stamp, indent=1) + "\n")


def _fold_csvs(data: MultiLabelSet, items: list[str], rows: np.ndarray, path: Path) -> None:
    from mlcl.data.csv_format import write_csv_labels

    part = data.subset(rows)
    part.ids = [items[i] for i in rows.tolist()]
    write_csv_labels(path, part)


def cross_fit(
    cfg: Config,
    data: MultiLabelSet,
    *,
    folds: int = 5,
    work_dir: str | os.PathLike[str],
    seed: int | None = None,
    overwrite: bool = False,
) -> OutOfSampleScores:
    """Score every image of ``data`` by a fold model that never trained on it (module docstring).

    Args:
        cfg: The training configuration of every fold model (as ``mlcl train`` builds it); its ``data.train``,
            ``data.test``, ``run.out`` and ``run.overwrite`` are set per fold. ``data.missing`` must be ``none``
            and ``data.test`` unset.
        data: The label set to score (image files, e.g. a CSV file read with :func:`mlcl.data.sources.load_dataset`).
        folds: ``K >= 2``.
        work_dir: The folds folder (see :func:`_claim`: new, or a previous cross-fit of the same inputs).
        seed: Seed of the fold assignment; ``None`` uses ``cfg.train.seed``.
        overwrite: Replace a folds folder that holds another cross-fit.

    Returns:
        :class:`OutOfSampleScores` with ``method="cross-fit"``.

    Raises:
        ConfigError: Bad ``folds``, ``data.missing`` or ``data.test`` set, in-memory images, an unusable folder.
        DataError: A fold run's scores do not cover its held-out images.
    """
    from mlcl.engine.trainer import fit
    from mlcl.report.run_folder import locate_run
    from mlcl.report.scores import SCORES_FILE, load_scores

    _check_config(cfg)
    items = _file_items(data)
    seed = cfg.train.seed if seed is None else int(seed)
    assign = fold_assignment(len(data), folds, seed)
    work = Path(work_dir).absolute()
    _claim(work, _stamp(cfg, data, items, folds, seed), overwrite)
    probs = np.full((len(data), data.num_classes), np.nan, dtype=np.float32)
    runs = []
    for k in range(folds):
        fold_dir = work / f"fold{k}"
        train_rows, scored_rows = np.nonzero(assign != k)[0], np.nonzero(assign == k)[0]
        run_dir = fold_dir / "run"
        stage = locate_run(run_dir).stage
        if (stage / "metrics.json").is_file() and (stage / SCORES_FILE).is_file():
            log.info("fold %d/%d: reusing %s", k + 1, folds, run_dir)
        else:
            fold_dir.mkdir(parents=True, exist_ok=True)
            _fold_csvs(data, items, train_rows, fold_dir / "train.csv")
            _fold_csvs(data, items, scored_rows, fold_dir / "scored.csv")
            fold_cfg = copy.deepcopy(cfg)
            fold_cfg.data.train, fold_cfg.data.test = str(fold_dir / "train.csv"), str(fold_dir / "scored.csv")
            fold_cfg.run.out, fold_cfg.run.overwrite = str(run_dir), True
            log.info("fold %d/%d: training on %d images, scoring %d", k + 1, folds, len(train_rows), len(scored_rows))
            fit(fold_cfg)
            stage = locate_run(run_dir).stage
        scores = load_scores(stage / SCORES_FILE)
        if scores.class_names != data.class_names:
            raise DataError(f"{stage / SCORES_FILE}: classes {scores.class_names} differ from the data's")
        row_of = {items[i]: i for i in scored_rows.tolist()}
        got = [row_of.get(os.path.abspath(ident), -1) for ident in scores.ids]
        if sorted(got) != scored_rows.tolist():
            raise DataError(
                f"{stage / SCORES_FILE}: its images are not those of fold {k} (remove {work} and run again)"
            )
        probs[got] = scores.scores
        runs.append(FoldRun(k, run_dir, train_rows, scored_rows))
    return OutOfSampleScores(probs, assign, "cross-fit", runs, 0, str(work))


def _trained_items(run_dir: Path) -> set[str]:
    """The image files of a run's training data (its validation hold-out included), by absolute path."""
    from mlcl.data.sources import load_dataset, split_for
    from mlcl.engine.config import load_config
    from mlcl.report.run_folder import locate_run

    run = locate_run(run_dir)
    try:
        spec = load_config(run.config).data.train
        trained = load_dataset(spec, split_for(spec, "train"), check_images=False)
    except Exception:  # noqa: BLE001 - the run's data may have moved: then nothing is known of the overlap
        return set()
    return {os.path.abspath(p) for p in trained.items} if isinstance(trained.items, list) else set()


def score_with_run(
    run_dir: str | os.PathLike[str],
    data: MultiLabelSet,
    *,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
) -> OutOfSampleScores:
    """Score every image of ``data`` with a finished run's best checkpoint; warn that in-sample scores are biased.

    Args:
        run_dir: A run folder (a MulCon run: its final stage) or a ``best.pt`` file.
        data: The label set to score (image files).
        device: Where to run the model.
        batch_size: Images per forward pass.
        workers: DataLoader workers.

    Returns:
        :class:`OutOfSampleScores` with ``method="run"`` and ``seen`` = the images of ``data`` in the run's
        training data (a ``UserWarning`` says how many; unknown when the run's data cannot be read).

    Raises:
        ConfigError: The run's classes differ from the data's, or the images are in memory.
        CheckpointError: No readable checkpoint.
    """
    from mlcl.distributed import resolve_device
    from mlcl.inference import Predictor

    items = _file_items(data)
    run = Path(run_dir)
    pred = Predictor.from_checkpoint(run, device=resolve_device(device))
    if pred.class_names != data.class_names:
        raise ConfigError(
            f"--from {run}: the run's classes {pred.class_names} differ from the data's {data.class_names}"
        )
    folder = run if run.is_dir() else run.parent
    trained = _trained_items(folder.parent if folder.name in ("stage1", "stage2") else folder)
    seen = sum(item in trained for item in items)
    what = f"{seen} of the {len(items)} images" if trained else "an unknown share of the images"
    warnings.warn(
        f"--from {run}: the model trained on {what} it now scores; such in-sample scores are biased (an unknown "
        "entry that the loss treated as negative during training scores low, an observed label is reproduced rather "
        "than checked). Cross-fitting (--folds K) scores every image by a model that never saw it",
        UserWarning,
        stacklevel=2,
    )
    probs, _ = pred.scores_on(data, batch_size=batch_size, workers=workers)
    return OutOfSampleScores(
        probs.numpy().astype(np.float32), np.full(len(data), -1, dtype=np.int64), "run", [], seen, str(run)
    )
