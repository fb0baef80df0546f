"""The multi-label classifier: a timm backbone and a head (linear, or MulCon's label-level attention)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, get_args

import torch.nn.functional as F
from torch import Tensor, nn

from mlcl.models.backbone import TimmBackbone
from mlcl.models.label_attention import LabelAttentionHead, check_label_attention_args

__all__ = ["HEADS", "PROJECTIONS", "Head", "ModelOutput", "MultiLabelClassifier", "Projection", "check_classifier_args"]

Head = Literal["linear", "mulcon"]
HEADS: tuple[str, ...] = get_args(Head)
"""Names accepted by ``head=``: ``linear`` (global pool + linear) or ``mulcon`` (:class:`LabelAttentionHead`)."""

Projection = Literal["label", "image"]
PROJECTIONS: tuple[str, ...] = get_args(Projection)
"""Names accepted by ``projection=`` (besides ``None``)."""


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


def check_classifier_args(
    head: str = "linear",
    *,
    drop_rate: float = 0.0,
    projection: str | None = None,
    head_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Check the arguments of :class:`MultiLabelClassifier` that do not depend on the backbone.

    :class:`MultiLabelClassifier` calls it first; :func:`mlcl.models.create_model` calls it before it builds the
    backbone. The mulcon head's sizes are checked by
    :func:`~mlcl.models.label_attention.check_label_attention_args`.

    Raises:
        ValueError: Naming the argument and its value (a :class:`~mlcl.errors.ConfigError` for head sizes).
    """
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {', '.join(HEADS)}, got {head!r}")
    if projection is not None and projection not in PROJECTIONS:
        raise ValueError(f"`projection` must be None, 'label' or 'image', got {projection!r}")
    if projection == "label" and head != "mulcon":
        raise ValueError(f"`projection`='label' (label-level projections) needs head='mulcon', got head={head!r}")
    if not (isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1):
        raise ValueError(f"`drop_rate` must lie in [0, 1), got {drop_rate!r}")
    hk = dict(head_kwargs or {})
    if head == "mulcon":
        check_label_attention_args(**hk)
    elif projection == "image":
        check_label_attention_args(proj_hidden=hk.get("proj_hidden", 1024), proj_dim=hk.get("proj_dim", 128))


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
        head: Head = "linear",
        drop_rate: float = 0.0,
        projection: Projection | None = None,
        head_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        check_classifier_args(head, drop_rate=drop_rate, projection=projection, head_kwargs=head_kwargs)
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
                proj = self.head.project(out.label_emb)
        if self.projection == "image":
            proj = F.normalize(self.image_proj(embedding), dim=-1)
        return ModelOutput(logits, embedding, label_emb, attn, proj)
