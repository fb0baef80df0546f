"""Class activation maps and BoostLU's boost (models/cam.py and the linear head's ``cam_boost``).

References are naive float64 loops over the locations of the feature map, written from the paper's equations
(CAM = classifier at every location, bias included; positive part times alpha; average over the locations).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mlcl
from mlcl.errors import ConfigError
from mlcl.models.cam import boost_cam, boostlu_forward, class_activation_map


def _naive_logits(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, alpha: float) -> torch.Tensor:
    """``logit[n, c] = mean_{h, w} boost(sum_d W[c, d] f[n, d, h, w] + b[c])`` by explicit loops (float64)."""
    f, w, b = feats.double(), weight.double(), bias.double()
    n, _, h, wd = f.shape
    out = torch.zeros(n, w.shape[0], dtype=torch.float64)
    for i in range(n):
        for c in range(w.shape[0]):
            total = torch.zeros((), dtype=torch.float64)
            for y in range(h):
                for x in range(wd):
                    v = (w[c] * f[i, :, y, x]).sum() + b[c]
                    total = total + (alpha * v if v > 0 else v)
            out[i, c] = total / (h * wd)
    return out


def test_boostlu_forward_against_loops_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    cam, boosted, logits = boostlu_forward(f, w, b, alpha=5.0)
    torch.testing.assert_close(logits, _naive_logits(f.detach(), w.detach(), b.detach(), 5.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(boosted, torch.where(cam > 0, 5 * cam, cam))
    # d logit / d CAM = (alpha if CAM > 0 else 1) / (H W), at CAM = 0 the un-boosted slope
    logits.sum().backward()
    assert f.grad is not None
    cam2 = torch.tensor([[[[1.0, 0.0], [-2.0, 3.0]]]], dtype=torch.float64, requires_grad=True)
    boost_cam(cam2, 5.0).mean().backward()
    assert cam2.grad is not None
    assert cam2.grad.flatten().tolist() == [5 / 4, 1 / 4, 1 / 4, 5 / 4]
    with pytest.raises(ValueError, match="cam_boost"):
        boost_cam(cam2, 0.0)
    with pytest.raises(ValueError, match="weight"):
        class_activation_map(f, w[:, :3], b)


def _model(cam_boost: float, drop_rate: float = 0.0) -> mlcl.models.MultiLabelClassifier:
    torch.manual_seed(0)
    return mlcl.create_model("resnet10t", 3, cam_boost=cam_boost, drop_rate=drop_rate).double()


def test_boosted_head_equals_loops_over_locations_in_train_and_eval() -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = _model(5.0).eval()
    with torch.no_grad():
        feats = model.backbone(x)
        assert feats.shape[2:] == (2, 2)
        got = model(x).logits
    want = _naive_logits(feats, model.fc.weight.detach(), model.fc.bias.detach(), 5.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # The boost changes the output: the plain head on the same weights differs.
    plain = _model(1.0).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x).logits, got)
    # The exposed CAM is the classifier at every location; its mean is the plain head's logit.
    with torch.no_grad():
        cam = model.class_activation_map(feats)
    torch.testing.assert_close(cam.mean((2, 3)), _naive_logits(feats, model.fc.weight, model.fc.bias, 1.0))


def test_cam_boost_one_is_the_plain_head_exactly() -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.manual_seed(0)
    default = mlcl.create_model("resnet10t", 3, drop_rate=0.3).double()
    one = _model(1.0, drop_rate=0.3)
    assert one.state_dict().keys() == default.state_dict().keys()
    for m in (default, one):
        m.train()
    torch.manual_seed(5)
    a = default(x).logits
    torch.manual_seed(5)
    b = one(x).logits
    assert torch.equal(a, b)  # same path, same dropout draws
    with torch.no_grad():
        feats = one.backbone(x)
        # pooling then linear == linear at every location then mean (the CAM exposure is consistent)
        torch.testing.assert_close(
            one.fc(one.backbone.pool(feats)), one.class_activation_map(feats).mean((2, 3)), rtol=1e-12, atol=1e-12
        )


def test_dropout_of_the_boosted_head_drops_channels_per_image() -> None:
    """Dropout on the pooled embedding drops channel d of image n everywhere: the boosted head does the same."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = _model(5.0, drop_rate=0.5).train()
    torch.manual_seed(7)
    got = model(x).logits
    torch.manual_seed(7)
    feats = model.backbone(x).detach()
    mask = F.dropout2d(torch.ones_like(feats), 0.5, True)
    assert torch.all((mask == 0) | (mask == 2.0))
    assert torch.all(mask == mask[:, :, :1, :1])  # one draw per (image, channel)
    want = _naive_logits(feats * mask, model.fc.weight.detach(), model.fc.bias.detach(), 5.0)
    torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-10)
    model.eval()  # no dropout (and BatchNorm's running statistics)
    with torch.no_grad():
        feats = model.backbone(x)
        torch.testing.assert_close(model(x).logits, _naive_logits(feats, model.fc.weight, model.fc.bias, 5.0))


def test_heads_and_backbones_without_a_cam_are_refused() -> None:
    with pytest.raises(ValueError, match="`head`='mulcon' has no class activation map"):
        mlcl.create_model("resnet10t", 3, head="mulcon", head_dim=16, cam_boost=5.0)
    with pytest.raises(ConfigError, match="global average"):
        mlcl.create_model("test_vit", 3, cam_boost=5.0)
    with pytest.raises(ValueError, match="cam_boost"):
        mlcl.create_model("resnet10t", 3, cam_boost=float("nan"))
    model = mlcl.create_model("resnet10t", 3, head="mulcon", head_dim=16)
    with pytest.raises(ValueError, match="no class activation map"):
        model.class_activation_map(torch.zeros(1, 512, 2, 2))
