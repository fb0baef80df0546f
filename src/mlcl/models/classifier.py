"""The multi-label classifier: a timm backbone and a head (linear, or MulCon's label-level attention)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlcl.choices import Head, Projection
from mlcl.errors import ConfigError
from mlcl.models.backbone import TimmBackbone
from mlcl.models.cam import boost_cam, check_cam_boost, class_activation_map
from mlcl.models.label_attention import LabelAttentionHead, check_label_attention_args

__all__ = ["HEADS", "PROJECTIONS", "Head", "ModelOutput", "MultiLabelClassifier", "Projection", "check_classifier_args"]

HEADS: tuple[str, ...] = get_args(Head)
"""Names accepted by ``head=``: ``linear`` (global pool + linear) or ``mulcon`` (:class:`LabelAttentionHead`)."""

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
    cam_boost: float = 1.0,
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
    check_cam_boost(cam_boost)
    if cam_boost != 1 and head != "linear":
        raise ValueError(
            f"`head`={head!r} has no class activation map, so BoostLU (cam_boost={cam_boost!r}) cannot boost it: "
            "use head='linear'"
        )
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
        cam_boost: BoostLU's ``alpha`` (Kim et al., CVPR 2023; :mod:`mlcl.models.cam`), linear head only. 1 (the
            default): the plain head, ``fc(dropout(pool(features)))``, unchanged. Otherwise the logits are the
            average over the locations of the boosted class activation map
            ``where(CAM > 0, alpha * CAM, CAM)`` with ``CAM = fc`` applied at every location of the feature map
            (:meth:`class_activation_map`), in training and in evaluation alike (the boost is part of the
            model: ``eval``, ``predict`` and exports apply it). Dropout then zeroes whole channels of the
            feature map per image (``dropout2d``, scaled by ``1 / (1 - drop_rate)``): the same channels at
            every location, which is what dropout on the pooled embedding does to the plain head. It needs a
            backbone whose pooling is the global average of an NCHW (or NHWC) feature map (ResNets,
            EfficientNets, ...): another one (a transformer's class token, a head with layers after the
            pooling) is refused when the model is built.

    Raises:
        ValueError: For an argument :func:`check_classifier_args` rejects; a :class:`~mlcl.errors.ConfigError`
            for a ``cam_boost`` other than 1 on a backbone whose pooling is not a global average.
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
        cam_boost: float = 1.0,
    ) -> None:
        super().__init__()
        check_classifier_args(
            head, drop_rate=drop_rate, projection=projection, head_kwargs=head_kwargs, cam_boost=cam_boost
        )
        hk = dict(head_kwargs or {})
        self.backbone = backbone
        self.num_classes = num_classes
        self.head_type = head
        self.projection = projection
        self.cam_boost = float(cam_boost)
        d = backbone.num_features
        if self.cam_boost != 1:
            _check_average_pooling(backbone)
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
        """Images ``(B, 3, H, W)`` -> :class:`ModelOutput`: ``forward_head(backbone(x), backbone.pool(...))``."""
        feats = self.backbone(x)
        return self.forward_head(feats, self.backbone.pool(feats))

    @property
    def needs_feature_map(self) -> bool:
        """Whether the head reads the feature map (label attention, BoostLU's CAM), not only the pooled embedding."""
        return self.head_type != "linear" or self.cam_boost != 1

    def forward_head(self, feats: Tensor | None, embedding: Tensor) -> ModelOutput:
        """Everything after the backbone: the head (and the projection) on its output.

        Args:
            feats: The backbone's feature map (``TimmBackbone.forward``'s output); may be ``None`` when
                :attr:`needs_feature_map` is false (the plain linear head reads only ``embedding``).
            embedding: ``(B, D)`` the pooled embedding, ``backbone.pool(feats)``.
        """
        label_emb = attn = proj = None
        if self.head_type == "linear" and self.cam_boost == 1:
            logits = self.fc(self.dropout(embedding))
        elif feats is None:
            raise ValueError(f"the {self.head_type!r} head (cam_boost={self.cam_boost}) needs the feature map")
        elif self.head_type == "linear":
            fmap = F.dropout2d(self._nchw(feats), self.dropout.p, self.training)
            logits = boost_cam(class_activation_map(fmap, self.fc.weight, self.fc.bias), self.cam_boost).mean((2, 3))
        else:
            tokens, _ = self.backbone.tokens(feats)
            out = self.head(tokens)
            logits, label_emb, attn = out.logits, out.label_emb, out.attn
            if self.projection == "label":
                proj = self.head.project(out.label_emb)
        if self.projection == "image":
            proj = F.normalize(self.image_proj(embedding), dim=-1)
        return ModelOutput(logits, embedding, label_emb, attn, proj)

    def _nchw(self, feats: Tensor) -> Tensor:
        """The backbone's feature map as ``(B, D, H, W)``."""
        if feats.ndim != 4:
            raise ValueError(f"backbone {self.backbone.name} returned no feature map: shape {tuple(feats.shape)}")
        return feats.permute(0, 3, 1, 2) if self.backbone.output_fmt == "NHWC" else feats

    def class_activation_map(self, feats: Tensor) -> Tensor:
        """The linear head's class activation map ``(B, C, H, W)`` (before any boost) of ``backbone(x)``.

        ``fc`` applied at every location (:func:`mlcl.models.cam.class_activation_map`, bias included); its mean
        over the locations is the plain head's logit when the pooling is a global average. No dropout.

        Raises:
            ValueError: The head is not ``linear`` (the label-attention head has no class activation map).
        """
        if self.head_type != "linear":
            raise ValueError(f"`head`={self.head_type!r} has no class activation map (only the linear head has one)")
        return class_activation_map(self._nchw(feats), self.fc.weight, self.fc.bias)


def _check_average_pooling(backbone: TimmBackbone) -> None:
    """Refuse a backbone whose pooled embedding is not the global average of its feature map (BoostLU needs it).

    Its pooling (:meth:`TimmBackbone.pool`) is run on a small random map on the CPU (no backbone forward).
    """
    d = backbone.num_features
    fmap = torch.randn(2, d, 3, 2, generator=torch.Generator().manual_seed(0), device="cpu")
    x = fmap.permute(0, 2, 3, 1) if backbone.output_fmt == "NHWC" else fmap
    try:
        with torch.no_grad():
            pooled = backbone.pool(x)
        ok = tuple(pooled.shape) == (2, d) and bool(torch.allclose(pooled, fmap.mean((2, 3)), atol=1e-5))
    except Exception:  # noqa: BLE001 - a pooling that cannot take a feature map is not an average of one
        ok = False
    if not ok:
        raise ConfigError(
            "`cam_boost` (BoostLU, loss.options.alpha) needs a backbone whose pooling is the global average of its "
            f"feature map; {backbone.name}'s is not (a class token, or layers after the pooling)"
        )
