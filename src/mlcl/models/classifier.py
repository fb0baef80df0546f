"""The multi-label classifier: a timm backbone and a head (linear, or MulCon's label-level attention)."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from mlcl.models.backbone import TimmBackbone
from mlcl.models.label_attention import LabelAttentionHead

__all__ = ["HEADS", "ModelOutput", "MultiLabelClassifier"]

HEADS = ("linear", "mulcon")


class ModelOutput(NamedTuple):
    """What the classifier returns.

    Attributes:
        logits: ``(B, C)`` scores before the sigmoid.
        embedding: ``(B, D)`` the backbone's pooled embedding (the input of the linear classifier; the
            embedding CLML regularises).
        label_emb: ``(B, C, d)`` label-level embeddings (mulcon head) or ``None``.
        attn: ``(B, heads, C, N)`` label cross-attention over the ``N`` feature tokens (mulcon head) or ``None``.
        proj: L2-normalised projections for a contrastive loss, ``(B, C, p)`` (label level) or ``(B, p)``
            (image level), or ``None`` when the model has no projection.
    """

    logits: Tensor
    embedding: Tensor
    label_emb: Tensor | None = None
    attn: Tensor | None = None
    proj: Tensor | None = None


class MultiLabelClassifier(nn.Module):
    """Backbone + head.

    Args:
        backbone: A :class:`TimmBackbone`.
        num_classes: ``C``.
        head: ``"linear"``: timm's global pooling then dropout and ``Linear(D, C)``. ``"mulcon"``: MulCon's
            label-level attention over the feature tokens with one classifier per label.
        drop_rate: Dropout before the linear classifier.
        projection: ``None``, ``"label"`` (project the label-level embeddings with the mulcon head's
            projector, for MulCon's contrastive loss) or ``"image"`` (an MLP projection of the pooled
            embedding, for image-level SupCon). The projection is computed inside ``forward`` so that
            DistributedDataParallel sees every parameter it trains.
        head_kwargs: Sizes of the mulcon head (``dim``, ``heads``, ``num_sab``, ``proj_hidden``, ``proj_dim``).
    """

    def __init__(
        self,
        backbone: TimmBackbone,
        num_classes: int,
        *,
        head: str = "linear",
        drop_rate: float = 0.0,
        projection: str | None = None,
        head_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS}, got {head!r}")
        if projection not in (None, "label", "image"):
            raise ValueError(f"`projection` must be None, 'label' or 'image', got {projection!r}")
        if projection == "label" and head != "mulcon":
            raise ValueError("label-level projections need head='mulcon'")
        hk = dict(head_kwargs or {})
        self.backbone = backbone
        self.num_classes = num_classes
        self.head_type = head
        self.projection = projection
        d = backbone.num_features
        if head == "linear":
            self.dropout = nn.Dropout(drop_rate)
            self.fc = nn.Linear(d, num_classes)
        else:
            self.head = LabelAttentionHead(d, num_classes, **hk)
        if projection == "image":
            hidden = int(hk.get("proj_hidden", 1024))
            self.image_proj = nn.Sequential(
                nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, int(hk.get("proj_dim", 128)))
            )

    def forward(self, x: Tensor) -> ModelOutput:
        """Images ``(B, 3, H, W)`` -> :class:`ModelOutput`."""
        feats = self.backbone(x)
        embedding = self.backbone.pool(feats)
        label_emb = attn = proj = None
        if self.head_type == "linear":
            logits = self.fc(self.dropout(embedding))
        else:
            tokens, _ = self.backbone.tokens(feats)
            out = self.head(tokens)
            logits, label_emb, attn = out.logits, out.label_emb, out.attn
        if self.projection == "label":
            proj = self.head.project(label_emb)
        elif self.projection == "image":
            proj = F.normalize(self.image_proj(embedding), dim=-1)
        return ModelOutput(logits, embedding, label_emb, attn, proj)
