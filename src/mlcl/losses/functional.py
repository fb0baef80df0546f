"""Functional forms of every loss in :mod:`mlcl.losses`, gathered in one namespace.

A facade: each function is defined next to its module, in its family's file (``bce``, ``asl``, ``hill``,
``splc``, ``large_loss``, ``single_positive``, ``role``, ``clml``, ``supcon``, ``gr_loss``, ``gpr``, ``boostlu``,
``em_apl``), where its docstring holds its equation and normaliser. Import from here (``from
mlcl.losses.functional import clml``, ``LF.hill_loss``) or from the family module; both are the same objects.

Element-wise losses take ``logits`` ``(N, C)`` (before the sigmoid) and ``targets`` ``(N, C)`` in
{1, 0, -1} (positive, negative, unknown; see :mod:`mlcl.targets`) and return a scalar for ``reduction``
``"mean"``/``"sum"`` or an ``(N, C)`` tensor for ``"none"``.

:func:`batched_eigh` and :func:`eigh_size_groups` are building blocks of CLML's kernel, public for the
benchmarks that time them.
"""

from __future__ import annotations

from mlcl.losses._common import Reduction, Unknown
from mlcl.losses._nuclear import batched_eigh, eigh_size_groups
from mlcl.losses.asl import asymmetric_loss, focal_loss
from mlcl.losses.bce import binary_cross_entropy
from mlcl.losses.boostlu import BoostLUTerms, boostlu_clean_rate, boostlu_k, boostlu_large_loss
from mlcl.losses.clml import CLMLTerms, clml, clml_correct_targets, clml_terms
from mlcl.losses.em_apl import apl_counts, apl_update, em_apl_loss, em_loss
from mlcl.losses.gpr import damp_pseudo_labels, gpr_loss, pseudo_labels_from_scores
from mlcl.losses.gr_loss import gr_loss, gr_schedule, gr_weights
from mlcl.losses.hill import hill_loss
from mlcl.losses.large_loss import Scheme, large_loss, large_loss_selection
from mlcl.losses.role import role_loss
from mlcl.losses.single_positive import expected_positive_regularization, weak_assume_negative
from mlcl.losses.splc import splc_loss
from mlcl.losses.supcon import image_supcon, label_supcon, select_contrast_rows, supcon_from_rows

__all__ = [
    "BoostLUTerms",
    "CLMLTerms",
    "Reduction",
    "Scheme",
    "Unknown",
    "apl_counts",
    "apl_update",
    "asymmetric_loss",
    "batched_eigh",
    "binary_cross_entropy",
    "boostlu_clean_rate",
    "boostlu_k",
    "boostlu_large_loss",
    "clml",
    "clml_correct_targets",
    "clml_terms",
    "eigh_size_groups",
    "em_apl_loss",
    "em_loss",
    "expected_positive_regularization",
    "damp_pseudo_labels",
    "focal_loss",
    "gpr_loss",
    "gr_loss",
    "gr_schedule",
    "gr_weights",
    "hill_loss",
    "image_supcon",
    "label_supcon",
    "large_loss",
    "large_loss_selection",
    "pseudo_labels_from_scores",
    "role_loss",
    "select_contrast_rows",
    "splc_loss",
    "supcon_from_rows",
    "weak_assume_negative",
]
