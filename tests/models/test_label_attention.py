"""MulCon's label-attention head: shapes, invariances, gradients, initialisation (official weights: see
``test_mulcon_weights.py``)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlcl.errors import ConfigError
from mlcl.models.backbone import feature_map_to_tokens
from mlcl.models.label_attention import (
    LabelAttention,
    LabelAttentionHead,
    attention_maps,
    check_label_attention_args,
)
from mlcl.models.mulcon_weights import official_attn_layout
from tests.helpers.label_attention import randomise, small_head


# ------------------------------------------------------------------------------------------ shapes
def test_shapes_cnn_map() -> None:
    head = small_head()
    fmap = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    tokens = feature_map_to_tokens(fmap)
    assert tokens.shape == (2, 12, 16)
    assert torch.equal(tokens[1, 1 * 4 + 2], fmap[1, :, 1, 2])  # token index h*W + w
    out = head(tokens)
    assert out.logits.shape == (2, 5) and out.label_emb.shape == (2, 5, 8) and out.attn.shape == (2, 4, 5, 12)
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(2, 4, 5, dtype=torch.float64))
    z = head.project(out.label_emb)
    assert z.shape == (2, 5, 6)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2, 5, dtype=torch.float64))
    maps = head.attention_maps(out.attn, (3, 4))
    assert maps.shape == (2, 5, 3, 4)
    torch.testing.assert_close(maps[0, 2, 1, 3], out.attn[0, :, 2, 1 * 4 + 3].mean())
    assert official_attn_layout(out.attn).shape == (8, 5, 12)
    torch.testing.assert_close(official_attn_layout(out.attn)[3 * 2 + 1], out.attn[1, 3])


@pytest.mark.parametrize("num_sab", [0, 1, 2])
def test_shapes_token_input(num_sab: int) -> None:
    head = small_head(in_dim=12, num_classes=3, num_sab=num_sab)
    out = head(torch.randn(4, 7, 12, dtype=torch.float64))  # e.g. ViT patch tokens, prefix tokens dropped
    assert out.logits.shape == (4, 3) and out.attn.shape == (4, 4, 3, 7)
    assert len(head.attention.token_blocks()) == num_sab
    assert attention_maps(out.attn[:, 0], (7, 1)).shape == (4, 3, 7, 1)


# ------------------------------------------------------------------------------------------ invariances
def test_token_permutation_invariance() -> None:
    head = small_head()
    randomise(head)
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    perm = torch.randperm(9)
    a, b = head(x), head(x[:, perm])
    torch.testing.assert_close(b.label_emb, a.label_emb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.attn, a.attn[..., perm], rtol=1e-12, atol=1e-12)


def test_label_permutation_equivariance() -> None:
    head = small_head()
    randomise(head)
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    ref = head(x)
    sigma = torch.randperm(5)
    with torch.no_grad():
        head.attention.I.copy_(head.attention.I[:, sigma])
        head.classifier_weight.copy_(head.classifier_weight[sigma])
        head.classifier_bias.copy_(head.classifier_bias[sigma])
    out = head(x)
    torch.testing.assert_close(out.label_emb, ref.label_emb[:, sigma], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.logits, ref.logits[:, sigma], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head.project(out.label_emb), head.project(ref.label_emb)[:, sigma])


# ------------------------------------------------------------------------------------------ gradients / init
def test_every_parameter_gets_a_gradient() -> None:
    head = small_head()
    out = head(torch.randn(3, 6, 16, dtype=torch.float64))
    z = head.project(out.label_emb)
    loss = F.binary_cross_entropy_with_logits(out.logits, (torch.rand(3, 5) < 0.5).double())
    loss = loss + (z * torch.randn_like(z)).sum()
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_official_init() -> None:
    torch.manual_seed(1)
    head = LabelAttentionHead(64, 20, dim=64, heads=4, proj_hidden=64, proj_dim=32)
    for name, module in head.named_modules():
        if isinstance(module, nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
            assert abs(module.weight.std().item() - 0.02) < 0.004, name
        elif isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
    assert abs(head.classifier_weight.std().item() - 0.02) < 0.004
    assert torch.equal(head.classifier_bias, torch.zeros(20))
    bound = math.sqrt(6.0 / (20 * 64 + 64))  # xavier-uniform on (1, L, d): fan_in = L*d, fan_out = d
    assert head.attention.I.shape == (1, 20, 64)
    assert head.attention.I.abs().max() <= bound and head.attention.I.abs().max() > 0.9 * bound


def test_official_parameter_counts() -> None:
    with torch.device("meta"):
        head = LabelAttentionHead(2048, 80)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    att = head.attention
    assert round(count(att) / 1e6, 2) == 44.17
    assert round(count(att.sab1) / 1e6, 2) == 16.79 and round(count(att.sab2) / 1e6, 2) == 16.79
    assert round(count(att.mab) / 1e6, 2) == 6.30 and round(count(att.sab3) / 1e6, 2) == 4.20
    assert head.classifier_weight.numel() + head.classifier_bias.numel() == 80 * 1025
    assert round(count(head.projector) / 1e6, 2) == 1.18


def test_autocast_bfloat16_forward() -> None:
    head = LabelAttentionHead(16, 5, dim=8, heads=4, proj_hidden=12, proj_dim=6)
    x = torch.randn(2, 6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
        z = head.project(out.label_emb)
    assert all(torch.isfinite(t).all() for t in (out.logits, out.label_emb, out.attn, z))
    assert z.dtype == torch.float32
    torch.testing.assert_close(out.logits.float(), head(x).logits, rtol=0.1, atol=0.05)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="in_dim"):
        LabelAttentionHead(10, 3, dim=8, heads=4)
    with pytest.raises(ConfigError, match="dim"):
        LabelAttentionHead(16, 3, dim=6, heads=4)
    with pytest.raises(ConfigError, match="num_sab"):
        LabelAttention(16, 8, 4, 3, num_sab=3)
    head = small_head()
    with pytest.raises(ValueError, match="tokens"):
        head(torch.randn(2, 16, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="hw"):
        attention_maps(torch.rand(1, 4, 5, 12), (3, 5))

        head(torch.randn(2, 16, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="hw"):
        attention_maps(torch.rand(1, 4, 5, 12), (3, 5))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"dim": 10, "heads": 4}, "`dim`=10 must be a positive multiple of `heads`=4"),
        ({"heads": 0}, "`heads` must be >= 1, got 0"),
        ({"num_sab": 3}, "`num_sab` must be 0, 1 or 2"),
        ({"proj_hidden": 0}, "`proj_hidden` must be >= 1, got 0"),
        ({"proj_dim": -1}, "`proj_dim` must be >= 1, got -1"),
    ],
)
def test_head_sizes_checked_before_the_backbone(monkeypatch: pytest.MonkeyPatch, kwargs: dict, fragment: str) -> None:
    """The head and `create_model` share one check, and it runs before any backbone is built."""
    from mlcl.models import factory

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check_label_attention_args(**kwargs)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        LabelAttentionHead(8, 3, **{"dim": 8, "heads": 2, **kwargs})

    def no_backbone(*args: object, **kw: object) -> None:
        raise AssertionError("the backbone was built before the head's arguments were checked")

    monkeypatch.setattr(factory, "TimmBackbone", no_backbone)
    head_kwargs = {f"head_{k}" if k in ("dim", "heads", "num_sab") else k: v for k, v in kwargs.items()}
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        factory.create_model("resnet10t", 3, head="mulcon", **head_kwargs)
