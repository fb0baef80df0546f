"""Audited multi-label metrics: AP variants, mAP, CP/CR/CF1/OP/OR/OF1 (+ top-k) and a DDP-correct accumulator.

Unknown targets (``-1``) are ignored by every metric. Definitions and which peers use which variant:
``docs/metrics.md``.
"""

from mlcl.metrics.accumulator import MetricAccumulator
from mlcl.metrics.functional import (
    AP_VARIANTS,
    APVariant,
    average_precision,
    compute_metrics,
    mean_average_precision,
    threshold_metrics,
    unpredicted_classes,
)

__all__ = [
    "AP_VARIANTS",
    "APVariant",
    "MetricAccumulator",
    "average_precision",
    "compute_metrics",
    "mean_average_precision",
    "threshold_metrics",
    "unpredicted_classes",
]
