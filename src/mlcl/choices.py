"""The fixed sets of option values, as ``Literal`` aliases, in a module that imports nothing heavy.

Each alias is the one definition of its names: the component that consumes the option imports it from here
(:mod:`mlcl.models.classifier`, :mod:`mlcl.engine.optim`, :mod:`mlcl.data.transforms`,
:mod:`mlcl.metrics.functional`), the configuration types its fields with it (:mod:`mlcl.engine.config`), and the
command line takes its ``choices=`` from the configuration (:func:`mlcl.engine.config.field_choices`) without
importing torch, so that ``mlcl --help`` and a usage error answer at once.

Example:
    >>> from typing import get_args
    >>> get_args(Head)
    ('linear', 'mulcon')
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "APVariant",
    "AugmentPreset",
    "CacheStorage",
    "FreezeMode",
    "Head",
    "OptimizerName",
    "Projection",
    "Schedule",
]

Head = Literal["linear", "mulcon"]
"""``head=``: ``linear`` (global pool + linear) or ``mulcon`` (label-level attention, per-label classifiers)."""

Projection = Literal["label", "image"]
"""``projection=`` (besides ``None``): the label-level or the image-level projection of contrastive losses."""

OptimizerName = Literal["adam", "adamw", "sgd"]
"""Names accepted by :func:`mlcl.engine.optim.build_optimizer`."""

Schedule = Literal["onecycle", "cosine", "step", "constant"]
"""Names accepted by :func:`mlcl.engine.optim.lr_multiplier`."""

AugmentPreset = Literal["none", "light", "flip", "default", "strong", "asl"]
"""Names accepted by ``augment=`` (see :func:`mlcl.data.transforms.build_transform`)."""

APVariant = Literal["nonint", "voc11", "vocall", "mlgcn"]
"""Names accepted by ``variant=`` / ``ap_variant=`` (see :data:`mlcl.metrics.AP_VARIANTS`)."""

FreezeMode = Literal["none", "all"]
"""``train.freeze`` besides a number of stages: nothing frozen, or the whole backbone (:mod:`mlcl.engine.frozen`)."""

CacheStorage = Literal["auto", "memory", "file"]
"""``train.freeze_cache``: where the frozen trunk's features live (:func:`mlcl.data.feature_cache.resolve_storage`)."""
