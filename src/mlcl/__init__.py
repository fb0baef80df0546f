"""mlcl: multi-label image classification with contrastive learning, including training with missing labels.

Public API::

    import mlcl
    model = mlcl.create_model("resnet50", num_classes=80, head="mulcon")
    mlcl.metrics.mean_average_precision(scores, targets)
    mlcl.Predictor.from_checkpoint("runs/x/best.pt").predict(["a.jpg"])
    mlcl.fit(mlcl.load_config("configs/smoke.yaml"))

``import mlcl`` is light: the training stack (timm, scikit-learn, torchvision) is imported on first use of
:func:`fit`, :class:`Predictor`, :func:`create_model` or the configuration functions (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlcl._version import __version__

if TYPE_CHECKING:
    from mlcl import losses as losses
    from mlcl import metrics as metrics
    from mlcl.engine.config import Config as Config
    from mlcl.engine.config import load_config as load_config
    from mlcl.engine.trainer import FitResult as FitResult
    from mlcl.engine.trainer import fit as fit
    from mlcl.inference import Predictor as Predictor
    from mlcl.models.factory import create_model as create_model

__all__ = ["Config", "FitResult", "Predictor", "__version__", "create_model", "fit", "load_config", "losses", "metrics"]

_LAZY = {
    "losses": ("mlcl.losses", None),
    "metrics": ("mlcl.metrics", None),
    "Config": ("mlcl.engine.config", "Config"),
    "load_config": ("mlcl.engine.config", "load_config"),
    "FitResult": ("mlcl.engine.trainer", "FitResult"),
    "fit": ("mlcl.engine.trainer", "fit"),
    "Predictor": ("mlcl.inference", "Predictor"),
    "create_model": ("mlcl.models.factory", "create_model"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mlcl' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
