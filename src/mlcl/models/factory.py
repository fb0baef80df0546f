"""Build models from explicit arguments."""

from __future__ import annotations

from mlcl.models.backbone import TimmBackbone
from mlcl.models.classifier import Head, MultiLabelClassifier, Projection, check_classifier_args

__all__ = ["Head", "create_model"]


def create_model(
    backbone: str = "resnet10t",
    num_classes: int = 10,
    *,
    head: Head = "linear",
    pretrained: bool = False,
    weights: str | None = None,
    drop_rate: float = 0.0,
    projection: Projection | None = None,
    head_dim: int = 1024,
    head_heads: int = 4,
    head_num_sab: int = 2,
    proj_hidden: int = 1024,
    proj_dim: int = 128,
    cam_boost: float = 1.0,
) -> MultiLabelClassifier:
    """Create a multi-label classifier on any timm backbone.

    Args:
        backbone: timm model name (``resnet50``, ``tf_efficientnet_lite0``, ``vit_small_patch16_224``, ...).
        num_classes: Number of labels ``C``.
        head: ``"linear"`` (global pool + linear) or ``"mulcon"`` (label-level attention, per-label
            classifiers, projection head).
        pretrained: Load timm's pretrained weights from its hub (needs internet).
        weights: Local backbone weights file (a state dict), e.g. ``tf_efficientnet_lite0.pth``.
        drop_rate: Dropout before the linear classifier.
        projection: ``None``, ``"label"`` or ``"image"``: which projection ``forward`` computes for a
            contrastive loss.
        head_dim: Label-embedding width ``d`` of the mulcon head (paper: 1024).
        head_heads: Attention heads of the mulcon head (paper: 4).
        head_num_sab: Self-attention blocks on the feature tokens (official code: 2).
        proj_hidden: Hidden width of the projection head (paper: 1024).
        proj_dim: Projection width (paper: 128).
        cam_boost: BoostLU's boost factor ``alpha`` (linear head only; 1 = the plain head): the logits are the
            average of ``where(CAM > 0, alpha * CAM, CAM)`` over the class activation map's locations, at
            training and test time (:class:`~mlcl.models.classifier.MultiLabelClassifier`).

    Returns:
        A :class:`~mlcl.models.classifier.MultiLabelClassifier` whose ``forward(images)`` returns a
        :class:`~mlcl.models.classifier.ModelOutput` with ``logits`` of shape ``(B, num_classes)``.

    Example:
        >>> import torch, mlcl
        >>> model = mlcl.create_model("resnet10t", num_classes=5)
        >>> model(torch.zeros(2, 3, 64, 64)).logits.shape
        torch.Size([2, 5])

    Raises:
        ValueError: For a head argument :func:`~mlcl.models.classifier.check_classifier_args` rejects; checked
            before the backbone is built (and its weights loaded).
    """
    head_kwargs = {
        "dim": head_dim,
        "heads": head_heads,
        "num_sab": head_num_sab,
        "proj_hidden": proj_hidden,
        "proj_dim": proj_dim,
    }
    check_classifier_args(
        head, drop_rate=drop_rate, projection=projection, head_kwargs=head_kwargs, cam_boost=cam_boost
    )
    net = TimmBackbone(backbone, pretrained=pretrained, weights=weights)
    return MultiLabelClassifier(
        net,
        num_classes,
        head=head,
        drop_rate=drop_rate,
        projection=projection,
        head_kwargs=head_kwargs,
        cam_boost=cam_boost,
    )
