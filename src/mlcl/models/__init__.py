"""Models: timm backbones with a linear or label-level attention head."""

from mlcl.models.backbone import TimmBackbone
from mlcl.models.classifier import HEADS, Head, ModelOutput, MultiLabelClassifier
from mlcl.models.factory import create_model
from mlcl.models.label_attention import LabelAttentionHead

__all__ = [
    "HEADS",
    "Head",
    "LabelAttentionHead",
    "ModelOutput",
    "MultiLabelClassifier",
    "TimmBackbone",
    "create_model",
]
