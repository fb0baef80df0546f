r"""Class activation maps (CAM) of a linear head, and BoostLU's boost of their positive part.

Kim et al., "Bridging the Gap between Model Explanations in Partially Annotated Multi-label Classification",
CVPR 2023 (BoostLU; code youngwk/BridgeGapExplanationPAMC, ``models.py``).

A linear head on globally average-pooled features is a 1x1 convolution followed by the average over the
locations: with the backbone's feature map ``f`` ``(N, D, H, W)`` and the classifier ``(W, b)``,

.. math::
    \mathrm{CAM}_{nchw} = \sum_d W_{cd} f_{ndhw} + b_c,\qquad
    \mathrm{logit}_{nc} = \frac{1}{HW}\sum_{h,w}\mathrm{CAM}_{nchw} = W\,\bar f_n + b

(bias included at every location, so the mean of the map is exactly the linear head's logit). BoostLU multiplies
the positive part of the map by ``alpha`` before the average:

.. math::
    \mathrm{CAM}'_{nchw} = \begin{cases}\alpha\,\mathrm{CAM}_{nchw} & \mathrm{CAM}_{nchw} > 0\\
    \mathrm{CAM}_{nchw} & \text{otherwise}\end{cases},\qquad
    \mathrm{logit}_{nc} = \frac{1}{HW}\sum_{h,w}\mathrm{CAM}'_{nchw}.

The gradient of the boost is ``alpha`` where ``CAM > 0`` and 1 elsewhere (at ``CAM = 0`` exactly, the
un-boosted branch, as ``torch.where`` in the official code). With ``alpha = 1`` it is the plain linear head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["boost_cam", "boostlu_forward", "check_cam_boost", "class_activation_map"]


def check_cam_boost(alpha: float) -> None:
    """Check BoostLU's boost factor: a finite number > 0 (1 = no boost).

    Raises:
        ValueError: Naming ``cam_boost`` and the value.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"`cam_boost` (BoostLU's alpha) must be a finite number > 0, got {alpha!r}")


def class_activation_map(features: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The class activation map of a linear classifier: a 1x1 convolution of the feature map.

    Args:
        features: ``(N, D, H, W)`` the backbone's last feature map (NCHW).
        weight: ``(C, D)`` the linear classifier's weight.
        bias: ``(C,)`` its bias (added at every location) or ``None``.

    Returns:
        ``(N, C, H, W)``: ``CAM[n, c, h, w] = sum_d weight[c, d] * features[n, d, h, w] + bias[c]``.
    """
    if features.ndim != 4:
        raise ValueError(f"`features` must have shape (N, D, H, W), got {tuple(features.shape)}")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"`weight` must have shape (C, {features.shape[1]}), got {tuple(weight.shape)}")
    return F.conv2d(features, weight[:, :, None, None], bias)


def boost_cam(cam: Tensor, alpha: float) -> Tensor:
    """BoostLU: ``where(cam > 0, alpha * cam, cam)`` (any shape; the positive part scaled by ``alpha``)."""
    check_cam_boost(alpha)
    return torch.where(cam > 0, cam * alpha, cam)


def boostlu_forward(
    features: Tensor, weight: Tensor, bias: Tensor | None, *, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """BoostLU's head: CAM, boosted CAM and logits (official ``ImageClassifier.forward`` after the trunk).

    Args:
        features: ``(N, D, H, W)`` feature map.
        weight: ``(C, D)`` classifier weight (the 1x1 convolution).
        bias: ``(C,)`` classifier bias or ``None``.
        alpha: Boost factor (official default 5; 1 = the plain linear head).

    Returns:
        ``(cam (N, C, H, W), boosted (N, C, H, W), logits (N, C))`` with ``logits = boosted.mean((2, 3))``.
    """
    cam = class_activation_map(features, weight, bias)
    boosted = boost_cam(cam, alpha)
    return cam, boosted, boosted.mean((2, 3))
