"""What each loss name means for a user, without importing torch.

:data:`LOSS_CATALOG` holds, for every name of :data:`mlcl.losses.LOSSES` (same names, same order; a test checks
it), what the loss does in one sentence, what it does with unknown labels (``-1`` targets), and the label
settings it was made for. ``mlcl list losses`` prints it, and ``mlcl train`` names from it the losses that fit a
missing-label protocol that keeps no negative label (``single-positive``, ``keep-half-plus-one``,
``keep-fifth-plus-one``). The equations are in each loss's function (``docs/losses.md``).

Example:
    >>> LOSS_CATALOG["bce"].unknown
    'ignored'
    >>> "single-positive" in LOSS_CATALOG["bce-an"].made_for
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcl.errors import ConfigError

__all__ = ["LOSS_CATALOG", "SETTINGS", "LossEntry", "losses_for", "parse_loss_name"]

#: The label settings a loss can be made for: every label known; some labels unknown, with known negatives left
#: (``drop:R``, ``partial:P``); only positives known (``single-positive``, ``keep-*-plus-one``: no negative).
SETTINGS = ("full", "partial", "single-positive")


@dataclass(frozen=True)
class LossEntry:
    """One loss as a user sees it.

    Attributes:
        summary: What it does, in one sentence (with its paper).
        unknown: What it does with an unknown label (``ignored`` means: no loss and no gradient).
        made_for: The :data:`SETTINGS` it was designed or evaluated for.
    """

    summary: str
    unknown: str
    made_for: tuple[str, ...]


_SP = ("single-positive",)
_MISSING = ("partial", "single-positive")

LOSS_CATALOG: dict[str, LossEntry] = {
    "bce": LossEntry("binary cross-entropy on the known labels", "ignored", ("full", "partial")),
    "bce-an": LossEntry(
        "binary cross-entropy that assumes every unknown label is negative (the usual baseline)", "negative", _MISSING
    ),
    "wan": LossEntry("assume negative, unknown labels weighted 1/(C-1) (Cole et al., CVPR'21)", "weak negative", _SP),
    "epr": LossEntry(
        "positives only, plus a penalty keeping the expected number of positives per image (Cole et al., CVPR'21)",
        "expected count",
        _SP,
    ),
    "role": LossEntry(
        "learns an estimate of every unknown label with the model (Cole et al., CVPR'21)", "estimated", _SP
    ),
    "focal": LossEntry("focal loss: easy entries weigh less (Lin et al., ICCV'17)", "negative", ("full", "partial")),
    "asl": LossEntry(
        "asymmetric loss: negatives focused and clipped (Ridnik et al., ICCV'21)", "negative", ("full", "partial")
    ),
    "hill": LossEntry("Hill: a negative term robust to missing positives (Zhang et al. 2021)", "negative", _MISSING),
    "splc": LossEntry(
        "self-paced loss correction: confident unknown labels become positive (Zhang et al. 2021)",
        "negative, corrected",
        _MISSING,
    ),
    "ll-r": LossEntry(
        "large-loss rejection: drops the unknown labels with the largest losses (Kim et al., CVPR'22)",
        "negative, rejected",
        _SP,
    ),
    "ll-ct": LossEntry(
        "large-loss correction: the unknown labels with the largest losses count as positive in the batch "
        "(Kim et al., CVPR'22)",
        "negative, corrected",
        _SP,
    ),
    "ll-cp": LossEntry(
        "large-loss correction, kept: those labels become positive for the rest of the run (Kim et al., CVPR'22)",
        "negative, corrected",
        _SP,
    ),
    "gr": LossEntry(
        "generalised robust loss: scheduled soft pseudo-labels and weights (Chen et al., IJCAI'24)", "soft label", _SP
    ),
    "gpr": LossEntry(
        "GR loss with pseudo-labels from the model or a score file (AEVLP, Tran et al., ICCV'25)", "soft label", _SP
    ),
    "boostlu-ll-r": LossEntry(
        "ll-r with BoostLU: the linear head boosts its class activation map (Kim et al., CVPR'23)",
        "negative, rejected",
        _SP,
    ),
    "boostlu-ll-ct": LossEntry("ll-ct with BoostLU (Kim et al., CVPR'23)", "negative, corrected", _SP),
    "boostlu-ll-cp": LossEntry("ll-cp with BoostLU (Kim et al., CVPR'23)", "negative, corrected", _SP),
    "em": LossEntry("entropy maximisation on the unknown labels (Zhou et al., ECCV'22)", "max. entropy", _SP),
    "em-apl": LossEntry(
        "EM plus pseudo-labels for confident negatives (Zhou et al., ECCV'22)", "max. entropy, pseudo", _SP
    ),
}


def losses_for(setting: str) -> list[str]:
    """The names of the losses made for ``setting`` (one of :data:`SETTINGS`), in catalogue order.

    >>> losses_for("full")
    ['bce', 'focal', 'asl']
    """
    if setting not in SETTINGS:
        raise ValueError(f"`setting` must be one of {', '.join(SETTINGS)}, got {setting!r}")
    return [name for name, entry in LOSS_CATALOG.items() if setting in entry.made_for]


def parse_loss_name(name: str) -> tuple[str, bool]:
    """Split ``loss.name`` into its base loss and whether the CLML term is added.

    ``"hill+clml"`` -> ``("hill", True)``; ``"bce"`` -> ``("bce", False)``. The base is not checked against the
    catalogue here (the objective's builder names the valid ones).

    >>> parse_loss_name("hill+clml")
    ('hill', True)

    Raises:
        ConfigError: The name is empty, or is not ``BASE`` or ``BASE+clml``.
    """
    parts = [p.strip() for p in name.split("+") if p.strip()]
    if not parts:
        raise ConfigError(f"`loss.name` is empty: {name!r}")
    use_clml = "clml" in parts[1:]
    rest = [p for p in parts[1:] if p != "clml"]
    if rest or parts[0] == "clml":
        raise ConfigError(f"`loss.name` must be BASE or BASE+clml, got {name!r}")
    return parts[0], use_clml
