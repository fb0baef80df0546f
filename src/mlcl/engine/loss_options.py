"""Checks of the ``loss`` section against the loss it names, before anything is built.

* :func:`check_loss_options`: a ``loss.*`` option that the objective would not read (``loss.clml_tau`` without
  ``+clml`` in ``loss.name``, ``loss.con_tau`` without a contrastive term) is an error, not a silent no-op.
* :func:`check_loss_keywords`: a ``loss.options`` key the loss does not take is an error that lists the ones it
  takes.
* :func:`missing_label_warning`: a protocol that keeps no negative label with a loss that ignores unknown labels
  learns that every label is present; the warning names the losses made for that setting.

:func:`mlcl.engine.build.objective_from_config` runs the first two, so ``mlcl train``, ``-o`` overrides, YAML files
and ``mlcl config validate`` are all checked the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from mlcl.engine.config import Config, LossConfig
from mlcl.errors import ConfigError
from mlcl.loss_catalog import losses_for, parse_loss_name

__all__ = [
    "CLML_OPTIONS",
    "CONTRASTIVE_OPTIONS",
    "NO_NEGATIVE_PROTOCOLS",
    "check_loss_keywords",
    "check_loss_options",
    "missing_label_warning",
    "unused_loss_options",
]

#: ``loss.*`` fields read only by the CLML term (``loss.name=BASE+clml``).
CLML_OPTIONS = ("clml_weight", "clml_tau", "clml_start_epoch")

#: ``loss.*`` fields read only by a contrastive term (``loss.contrastive`` not ``none``, or ``train.method=mulcon``).
CONTRASTIVE_OPTIONS = ("contrastive_weight", "con_tau", "con_base_tau", "denominator_size")

#: Missing-label protocols that keep no negative label: every known label is a positive.
NO_NEGATIVE_PROTOCOLS = ("single-positive", "keep-half-plus-one", "keep-fifth-plus-one")


def _uses_clml(cfg: Config) -> bool:
    return parse_loss_name(cfg.loss.name)[1]


def unused_loss_options(cfg: Config, keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """The ``loss.*`` options of ``cfg`` that its objective would not read, each with the reason.

    Args:
        cfg: The configuration.
        keys: The dotted keys to check (e.g. those given on the command line, even at their default value);
            ``None``: every option of :data:`CLML_OPTIONS` and :data:`CONTRASTIVE_OPTIONS` whose value differs
            from its default.

    Returns:
        ``(key, reason)`` pairs, in the order of ``keys``.
    """
    default = LossConfig()
    if keys is None:
        names = [n for n in (*CLML_OPTIONS, *CONTRASTIVE_OPTIONS) if getattr(cfg.loss, n) != getattr(default, n)]
    else:
        names = [k.split(".", 1)[1] for k in keys if k.startswith("loss.")]
    contrastive = "label" if cfg.train.method == "mulcon" else cfg.loss.contrastive
    out = []
    for name in dict.fromkeys(names):
        if name in CLML_OPTIONS and not _uses_clml(cfg):
            base = cfg.loss.name
            out.append((f"loss.{name}", f"CLML is not part of `loss.name`={base!r} (use {base}+clml to add it)"))
        elif name in CONTRASTIVE_OPTIONS and contrastive == "none":
            out.append((f"loss.{name}", "there is no contrastive term (`loss.contrastive`=none)"))
        elif name == "denominator_size" and contrastive == "image":
            out.append(("loss.denominator_size", "only the label-level term uses it, and `loss.contrastive`=image"))
    return out


def check_loss_options(
    cfg: Config, keys: Iterable[str] | None = None, *, names: Mapping[str, str] | None = None
) -> None:
    """Refuse ``loss.*`` options that would do nothing (see :func:`unused_loss_options`).

    Args:
        cfg: The configuration.
        keys: As in :func:`unused_loss_options`.
        names: How to name a key in the message (e.g. ``{"loss.clml_tau": "--clml-tau"}``); default: the key
            in backquotes.

    Raises:
        ConfigError: One line naming each such option, its value and why it does nothing.
    """
    unused = unused_loss_options(cfg, keys)
    names = names or {}
    if unused:
        parts = []
        for key, why in unused:
            value = getattr(cfg.loss, key.split(".", 1)[1])
            shown = f"{names[key]} {value}" if key in names else f"`{key}`={value!r}"
            parts.append(f"{shown} does nothing: {why}")
        raise ConfigError("; ".join(parts))


def check_loss_keywords(name: str, cls: type, options: Mapping[str, Any]) -> None:
    """Refuse a ``loss.options`` key that the loss ``name`` (class ``cls``) does not take, listing those it takes.

    Raises:
        ConfigError: Naming ``loss.options.KEY`` and the valid keys.
    """
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k, p in params.items() if k != "reduction" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key == "reduction":
            raise ConfigError("`loss.options.reduction`: set it as `loss.reduction` (--reduction), not an option")
        if key not in params:
            takes = ", ".join(f"{k} (default {params[k].default!r})" for k in valid) or "none"
            raise ConfigError(f"`loss.options.{key}`: loss {name!r} has no option {key!r}; its options: {takes}")


def missing_label_warning(cfg: Config) -> str | None:
    """The warning for a protocol that keeps no negative label with a loss that ignores unknown labels, or ``None``.

    With ``single-positive`` (or ``keep-*-plus-one``) every known label is a positive; a loss that ignores the
    unknown ones (``bce``, or ``unknown=ignore``) then sees no negative and learns to predict every label (CR 100,
    CP the label frequency).
    """
    from mlcl.data.missing import parse_protocol
    from mlcl.losses import LOSSES

    protocol = parse_protocol(cfg.data.missing).name
    if protocol not in NO_NEGATIVE_PROTOCOLS:
        return None
    base, _ = parse_loss_name(cfg.loss.name)
    cls = LOSSES.get(base.lower())
    if cls is None:
        return None
    param = inspect.signature(cls).parameters.get("unknown")
    unknown = cfg.loss.options.get("unknown", param.default if param is not None else None)
    if unknown != "ignore":
        return None
    fits = ", ".join(losses_for("single-positive"))
    return (
        f"`data.missing`={cfg.data.missing} keeps no negative label and loss {base!r} ignores unknown labels: the "
        f"model will learn that every label is present (recall 100 %, precision = label frequency); use a loss "
        f"made for positive-only labels: {fits} (`mlcl list losses`)"
    )
