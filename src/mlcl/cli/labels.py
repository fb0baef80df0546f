"""``mlcl labels``: find the missing labels of a label CSV (``suggest``), review them, accept them (``apply``).

``review`` writes the review page again; ``apply`` writes a new label CSV with the accepted suggestions.

``mlcl labels suggest`` takes every option of ``mlcl train`` (the same parser: :func:`mlcl.cli.train.add_parser`,
less its run-folder options ``--out``, ``--overwrite`` and ``--resume``): each fold model is an ``mlcl train`` run
of that configuration.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os

from mlcl.cli._common import Parser, fail, verbose_parent
from mlcl.errors import ConfigError

__all__ = ["add_parser", "run"]

#: Options of ``mlcl train`` that name its run folder: ``suggest`` has its own ``--out`` and ``--overwrite``.
_RUN_FOLDER_OPTIONS = ("--out", "--overwrite", "--resume")


def _train_options() -> argparse.ArgumentParser:
    """``mlcl train``'s parser (built by its own ``add_parser``), to inherit its options from."""
    from mlcl.cli import train

    holder = Parser(add_help=False)
    return train.add_parser(holder.add_subparsers(parser_class=Parser))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``mlcl labels`` and its sub-commands to ``subparsers``."""
    lp = subparsers.add_parser(
        "labels", help="find missing labels: suggest, review, apply (a new label CSV)", parents=[verbose_parent()]
    )
    sub = lp.add_subparsers(dest="labels_command", parser_class=Parser)
    s = sub.add_parser(
        "suggest",
        help="rank the unknown entries of a label CSV by their out-of-sample probability of being positive",
        description="Every option of `mlcl train` configures the fold models (or see --from). Writes OUT.csv "
        "(filename,class,value,probability,rank,suggested), OUT.scores.npz, OUT.json and the review page OUT.html.",
        parents=[_train_options()],
        add_help=False,
        conflict_handler="resolve",
    )
    for flag in _RUN_FOLDER_OPTIONS:
        action = s._option_string_actions.get(flag)
        if action is not None:
            action.help = argparse.SUPPRESS
    s.add_argument("--out", required=True, help="the suggestions file (.csv); its companions take its stem")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files (never the label file)")
    s.add_argument("--folds", type=int, default=5, help="K of the K-fold cross-fitting")
    s.add_argument(
        "--folds-dir",
        help="where the fold runs go (default OUT.folds/; a second call with the same inputs reuses them)",
    )
    s.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN",
        help="score with this run's best checkpoint instead of cross-fitting (in-sample for the images it trained "
        "on: biased, a warning says how many)",
    )
    s.add_argument(
        "--check-observed",
        action="store_true",
        help="also rank observed entries: negatives as likely missed positives, positives as likely wrong",
    )
    s.add_argument("--top", type=int, help="write the first N suggestions")
    s.add_argument("--per-class", type=int, help="write at most N suggestions per class")
    s.add_argument(
        "--min-prob", type=float, help="write the suggestions whose suggested value is right with probability >= P"
    )
    s.add_argument("--no-page", action="store_true", help="do not write the review page")

    a = sub.add_parser(
        "apply", help="write a NEW label CSV with the accepted suggestions set", parents=[verbose_parent()]
    )
    a.add_argument("suggestions", help="a suggestions file of `mlcl labels suggest`")
    a.add_argument(
        "--accept",
        required=True,
        help="all | top:N | min-prob:P | rows:FILE (a CSV with filename,class[,suggested] columns)",
    )
    a.add_argument("--out", required=True, help="the new label CSV (never the label file itself)")
    a.add_argument("--data", help="the label file (default: the one recorded in the suggestions' .json)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    r = sub.add_parser("review", help="write the review page of a suggestions file", parents=[verbose_parent()])
    r.add_argument("suggestions", help="a suggestions file of `mlcl labels suggest`")
    r.add_argument("--out", help="HTML file (default: the suggestions' stem + .html)")
    r.add_argument("--per-class", type=int, default=8, help="suggestions shown per class")
    return lp


def _suggest(args: argparse.Namespace) -> None:
    from mlcl.cli.train import train_config
    from mlcl.data.sources import dataset_kind, load_dataset, split_for
    from mlcl.labels.crossfit import cross_fit, score_with_run
    from mlcl.labels.suggest import check_outputs, write_suggestion_files

    if args.resume is not None:
        raise ConfigError("--resume is not an option of `mlcl labels suggest` (finished folds are reused)")
    if args.data is None:
        raise ConfigError("--data LABELS.csv is required: the label file whose missing labels to find")
    kind, path = dataset_kind(args.data)
    files = check_outputs(args.out, path if kind == "csv" else None, overwrite=args.overwrite)
    for flag, value in (("--top", args.top), ("--per-class", args.per_class)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.min_prob is not None and not 0.0 <= args.min_prob <= 1.0:
        raise ConfigError(f"--min-prob must be a probability in [0, 1], got {args.min_prob}")
    train_args = copy.copy(args)
    train_args.out, train_args.overwrite, train_args.resume = None, False, None
    cfg = train_config(train_args)
    data = load_dataset(cfg.data.train, split_for(cfg.data.train, "train"), check_images=cfg.data.check_images)
    logging.getLogger("mlcl").setLevel(min(logging.getLogger("mlcl").getEffectiveLevel(), logging.INFO))
    if args.from_run:
        scores = score_with_run(
            args.from_run, data, device=cfg.train.device, batch_size=cfg.train.batch_size, workers=cfg.data.num_workers
        )
    else:
        scores = cross_fit(
            cfg, data, folds=args.folds, work_dir=args.folds_dir or files.folds, overwrite=args.overwrite
        )
    from mlcl.engine.config import config_to_dict

    spec = os.path.abspath(path) if kind == "csv" else f"{kind}:{os.path.abspath(path)}" if path else args.data
    meta = {
        "data": spec,
        "method": scores.method,
        "folds": args.folds if scores.method == "cross-fit" else None,
        "fold_seed": cfg.train.seed if scores.method == "cross-fit" else None,
        "source": scores.source,
        "seen": scores.seen,
        "config": config_to_dict(cfg),
    }
    ranking, kept = write_suggestion_files(
        files,
        scores.probs,
        data,
        check_observed=args.check_observed,
        top=args.top,
        per_class=args.per_class,
        min_prob=args.min_prob,
        meta=meta,
    )
    if not args.no_page:  # built from the files just written: the review page reads the suggestions
        from mlcl.report.review import write_review_page

        write_review_page(files.csv, files.page)
    print(f"{len(kept)} of {len(ranking)} ranked entries written to {files.csv} (scores: {files.scores.name})")
    if not args.no_page:
        print(f"review page: {files.page}")


def _apply(args: argparse.Namespace) -> None:
    from mlcl.labels.apply import apply_suggestions

    result = apply_suggestions(
        args.suggestions, accept=args.accept, out=args.out, data=args.data, overwrite=args.overwrite
    )
    changed = ", ".join(f"{n} from {old} to {new}" for (old, new), n in sorted(result.changes.items())) or "none"
    print(f"{result.accepted} suggestions accepted; entries changed: {changed}")
    if result.renamed:
        print(f"image names rewritten relative to {result.out.resolve().parent} (the labels' folder differs)")
    print(f"new label file: {result.out} (train on it with `mlcl train --data {result.out}`)")


def _review(args: argparse.Namespace) -> None:
    from mlcl.report.review import write_review_page

    if args.per_class < 1:
        raise ConfigError(f"--per-class must be >= 1, got {args.per_class}")
    path = write_review_page(args.suggestions, args.out, per_class=args.per_class)
    print(f"review page written to {path}")


def run(args: argparse.Namespace) -> None:
    """Run ``mlcl labels suggest``, ``apply`` or ``review``."""
    commands = {"suggest": _suggest, "apply": _apply, "review": _review}
    if args.labels_command not in commands:
        fail("usage: mlcl labels suggest|apply|review ... (see `mlcl labels --help`)")
    commands[args.labels_command](args)
