"""mlcl: multi-label image classification with contrastive learning, including training with missing labels.

Public API::

    import mlcl
    model = mlcl.create_model("resnet50", num_classes=80, head="mulcon")
    mlcl.metrics.mean_average_precision(scores, targets)
    mlcl.Predictor.from_checkpoint("runs/x/best.pt").predict(["a.jpg"])
    mlcl.fit(mlcl.load_config("configs/coco_bce.yaml"))
"""

__version__ = "0.1.0"

from mlcl import losses as losses
from mlcl import metrics as metrics
from mlcl.engine.config import Config as Config
from mlcl.engine.config import load_config as load_config
from mlcl.engine.trainer import FitResult as FitResult
from mlcl.engine.trainer import fit as fit
from mlcl.inference import Predictor as Predictor
from mlcl.models.factory import create_model as create_model

__all__ = ["Config", "FitResult", "Predictor", "__version__", "create_model", "fit", "load_config", "losses", "metrics"]
