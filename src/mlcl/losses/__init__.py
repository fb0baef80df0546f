"""Multi-label losses for training with missing labels, and CLML.

Element-wise losses share one calling convention, ``loss(logits, targets) -> Tensor`` with ``targets``
``(N, C)`` in {1, 0, -1} (positive, negative, unknown) and ``reduction`` in {"mean", "sum", "none"}.
:data:`LOSSES` maps the CLI names to the classes; :func:`build_loss` instantiates one by name.
:class:`CLML` takes ``(features, logits, targets)`` and is added on top of a base loss.
Losses whose behaviour depends on the epoch (SPLC, ``LL-*``, CLML) expose ``set_epoch(epoch)`` (0-based),
which the trainer calls before each epoch. Every loss checks its hyper-parameters when it is built
(``ValueError`` naming the argument and the value). Each family's file holds its function (whose docstring
has the equation and normaliser) next to its module; :mod:`mlcl.losses.functional` gathers the functions.
``docs/losses.md`` has the overview table.
"""

from __future__ import annotations

from typing import Any

from mlcl.losses._common import Reduction as Reduction
from mlcl.losses._common import Unknown as Unknown
from mlcl.losses.asl import AsymmetricLoss as AsymmetricLoss
from mlcl.losses.asl import FocalLoss as FocalLoss
from mlcl.losses.base import EpochScheduled as EpochScheduled
from mlcl.losses.base import MultiLabelLoss as MultiLabelLoss
from mlcl.losses.bce import AssumeNegativeBCELoss as AssumeNegativeBCELoss
from mlcl.losses.bce import BCELoss as BCELoss
from mlcl.losses.boostlu import BoostLULargeLossPermanentCorrection as BoostLULargeLossPermanentCorrection
from mlcl.losses.boostlu import BoostLULargeLossRejection as BoostLULargeLossRejection
from mlcl.losses.boostlu import BoostLULargeLossTemporaryCorrection as BoostLULargeLossTemporaryCorrection
from mlcl.losses.clml import CLML as CLML
from mlcl.losses.em_apl import EMAPLLoss as EMAPLLoss
from mlcl.losses.em_apl import EMLoss as EMLoss
from mlcl.losses.gpr import GPRLoss as GPRLoss
from mlcl.losses.gr_loss import GRLoss as GRLoss
from mlcl.losses.hill import Hill as Hill
from mlcl.losses.large_loss import LargeLossPermanentCorrection as LargeLossPermanentCorrection
from mlcl.losses.large_loss import LargeLossRejection as LargeLossRejection
from mlcl.losses.large_loss import LargeLossTemporaryCorrection as LargeLossTemporaryCorrection
from mlcl.losses.large_loss import Scheme as Scheme
from mlcl.losses.role import RoleLoss as RoleLoss
from mlcl.losses.single_positive import ExpectedPositiveRegularization as ExpectedPositiveRegularization
from mlcl.losses.single_positive import WeakAssumeNegativeLoss as WeakAssumeNegativeLoss
from mlcl.losses.splc import SPLC as SPLC
from mlcl.losses.supcon import ImageSupConLoss as ImageSupConLoss
from mlcl.losses.supcon import LabelSupConLoss as LabelSupConLoss

__all__ = [
    "CLML",
    "LOSSES",
    "SPLC",
    "AssumeNegativeBCELoss",
    "AsymmetricLoss",
    "BCELoss",
    "BoostLULargeLossPermanentCorrection",
    "BoostLULargeLossRejection",
    "BoostLULargeLossTemporaryCorrection",
    "EMAPLLoss",
    "EMLoss",
    "EpochScheduled",
    "ExpectedPositiveRegularization",
    "FocalLoss",
    "GPRLoss",
    "GRLoss",
    "Hill",
    "ImageSupConLoss",
    "LabelSupConLoss",
    "LargeLossPermanentCorrection",
    "LargeLossRejection",
    "LargeLossTemporaryCorrection",
    "MultiLabelLoss",
    "Reduction",
    "RoleLoss",
    "Scheme",
    "Unknown",
    "WeakAssumeNegativeLoss",
    "build_loss",
]

#: CLI name -> element-wise loss class (all take ``forward(logits, targets)``; ``role`` also takes the
#: batch's dataset indices, see :class:`RoleLoss`).
LOSSES: dict[str, type[MultiLabelLoss]] = {
    "bce": BCELoss,
    "bce-an": AssumeNegativeBCELoss,
    "wan": WeakAssumeNegativeLoss,
    "epr": ExpectedPositiveRegularization,
    "role": RoleLoss,
    "focal": FocalLoss,
    "asl": AsymmetricLoss,
    "hill": Hill,
    "splc": SPLC,
    "ll-r": LargeLossRejection,
    "ll-ct": LargeLossTemporaryCorrection,
    "ll-cp": LargeLossPermanentCorrection,
    "gr": GRLoss,
    "gpr": GPRLoss,
    "boostlu-ll-r": BoostLULargeLossRejection,
    "boostlu-ll-ct": BoostLULargeLossTemporaryCorrection,
    "boostlu-ll-cp": BoostLULargeLossPermanentCorrection,
    "em": EMLoss,
    "em-apl": EMAPLLoss,
}


def build_loss(name: str, **kwargs: Any) -> MultiLabelLoss:
    """Instantiate the loss registered under ``name`` in :data:`LOSSES` with ``kwargs``.

    Args:
        name: CLI name, e.g. ``"asl"`` (case-insensitive).
        **kwargs: Constructor arguments of that class (e.g. ``reduction="sum"``, ``gamma_pos=0``).

    Raises:
        ValueError: For an unknown name (the message lists the valid ones).
        TypeError: For a keyword the class does not accept.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    return LOSSES[key](**kwargs)
