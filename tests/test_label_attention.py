"""MulCon's label-attention head: shapes, invariances, official weights, gradients.

The official-weights round trip compares with a small reference written here from the spec in
``reference/mulcon.md`` (b): modules named like the official ones (``sab1.mab.fc_q`` ..., a list of
``Linear(d, 1)`` classifiers, a ``Sequential`` projector) and the official head-major attention layout.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlcl.errors import CheckpointError, ConfigError
from mlcl.models.label_attention import (
    LabelAttention,
    LabelAttentionHead,
    attention_maps,
    check_label_attention_args,
    feature_map_to_tokens,
    official_attn_layout,
    official_state_dict_from_parts,
)


# ------------------------------------------------------------------------------------------ spec reference
class RefMAB(nn.Module):
    def __init__(self, dq: int, dk: int, dv: int, heads: int) -> None:
        super().__init__()
        self.dv, self.heads = dv, heads
        self.fc_q, self.fc_k, self.fc_v = nn.Linear(dq, dv), nn.Linear(dk, dv), nn.Linear(dk, dv)
        self.ln0, self.ln1 = nn.LayerNorm(dv), nn.LayerNorm(dv)
        self.fc_o = nn.Linear(dv, dv)

    def forward(self, qx: torch.Tensor, kx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.fc_q(qx), self.fc_k(kx), self.fc_v(kx)
        w = self.dv // self.heads
        outs, maps = [], []
        for j in range(self.heads):  # head j = columns j*w:(j+1)*w
            qj, kj, vj = q[..., j * w : (j + 1) * w], k[..., j * w : (j + 1) * w], v[..., j * w : (j + 1) * w]
            a = torch.softmax(qj @ kj.transpose(1, 2) / math.sqrt(self.dv), dim=2)
            outs.append(qj + a @ vj)
            maps.append(a)
        o = self.ln0(torch.cat(outs, dim=2))
        o = self.ln1(o + F.relu(self.fc_o(o)))
        return o, torch.cat(maps, dim=0)  # (heads*B, Nq, Nk), row j*B + b


class RefSAB(nn.Module):
    def __init__(self, d_in: int, d_out: int, heads: int) -> None:
        super().__init__()
        self.mab = RefMAB(d_in, d_in, d_out, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab(x, x)[0]


class RefNetA(nn.Module):
    def __init__(self, d_in: int, d: int, heads: int, L: int) -> None:
        super().__init__()
        self.I = nn.Parameter(torch.randn(1, L, d))
        self.mab = RefMAB(d, d_in, d, heads)
        self.sab1, self.sab2, self.sab3 = RefSAB(d_in, d_in, heads), RefSAB(d_in, d_in, heads), RefSAB(d, d, heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, a = self.mab(self.I.repeat(x.shape[0], 1, 1), self.sab2(self.sab1(x)))
        return self.sab3(h), a


def _randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name.endswith("bias") else 0.5))
            if ".ln" in name and name.endswith("weight"):
                p.add_(1.0)


def _official_parts(d_in: int = 16, d: int = 8, heads: int = 4, L: int = 5, hidden: int = 12, proj: int = 6):
    net_a = RefNetA(d_in, d, heads, L).double()
    net_c = [nn.Linear(d, 1).double() for _ in range(L)]
    net_p = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj)).double()
    for m in [net_a, *net_c, net_p]:
        _randomise(m)
    return net_a, net_c, net_p


def _ref_forward(net_a, net_c, net_p, tokens):
    g, a = net_a(tokens)
    logits = torch.stack([net_c[i](g[:, i]).squeeze(-1) for i in range(len(net_c))], dim=1)
    z = F.normalize(net_p(g.reshape(-1, g.shape[-1])), dim=1)
    return g, logits, z, a


def _small_head(**kw) -> LabelAttentionHead:
    args = dict(in_dim=16, num_classes=5, dim=8, heads=4, proj_hidden=12, proj_dim=6) | kw
    return LabelAttentionHead(**args).double()


# ------------------------------------------------------------------------------------------ shapes
def test_shapes_cnn_map() -> None:
    head = _small_head()
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
    head = _small_head(in_dim=12, num_classes=3, num_sab=num_sab)
    out = head(torch.randn(4, 7, 12, dtype=torch.float64))  # e.g. ViT patch tokens, prefix tokens dropped
    assert out.logits.shape == (4, 3) and out.attn.shape == (4, 4, 3, 7)
    assert len(head.attention.token_blocks()) == num_sab
    assert attention_maps(out.attn[:, 0], (7, 1)).shape == (4, 3, 7, 1)


# ------------------------------------------------------------------------------------------ invariances
def test_token_permutation_invariance() -> None:
    head = _small_head()
    _randomise(head)
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    perm = torch.randperm(9)
    a, b = head(x), head(x[:, perm])
    torch.testing.assert_close(b.label_emb, a.label_emb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.attn, a.attn[..., perm], rtol=1e-12, atol=1e-12)


def test_label_permutation_equivariance() -> None:
    head = _small_head()
    _randomise(head)
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


# ------------------------------------------------------------------------------------------ official weights
@pytest.mark.parametrize("style", ["plain", "param_prefix", "module_prefix"])
def test_load_official_state_dict_matches_reference(style: str) -> None:
    net_a, net_c, net_p = _official_parts()
    sd = official_state_dict_from_parts(net_a.state_dict(), [c.state_dict() for c in net_c], net_p.state_dict())
    assert "netA.sab1.mab.fc_q.weight" in sd and sd["netC.4.weight"].shape == (1, 8) and "netP.2.bias" in sd
    if style == "param_prefix":
        sd = {f"param_{k}": v for k, v in sd.items()}
    elif style == "module_prefix":
        sd = {k.replace("netA.", "netA.module.").replace("netP.", "module.netP."): v for k, v in sd.items()}
    head = _small_head()
    head.load_official_state_dict(sd)
    tokens = torch.randn(3, 6, 16, dtype=torch.float64)
    g, logits, z, a = _ref_forward(net_a, net_c, net_p, tokens)
    out = head(tokens)
    torch.testing.assert_close(out.label_emb, g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.logits, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head.project(out.label_emb).reshape(-1, 6), z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(official_attn_layout(out.attn), a, rtol=1e-12, atol=1e-12)
    # Export back to official names and into a fresh head: identical parameters.
    again = _small_head()
    again.load_official_state_dict(head.official_state_dict())
    for (k1, v1), (k2, v2) in zip(head.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_load_stacked_classifier_and_stage_one_checkpoint() -> None:
    net_a, net_c, net_p = _official_parts()
    sd = {f"netA.{k}": v for k, v in net_a.state_dict().items()}
    sd["netC.weight"] = torch.cat([c.weight for c in net_c]).detach()
    sd["netC.bias"] = torch.cat([c.bias for c in net_c]).detach()
    head = _small_head()
    before = head.projector[0].weight.clone()
    with pytest.raises(CheckpointError, match="netP.0.weight"):
        head.load_official_state_dict(sd)
    head.load_official_state_dict(sd, require_projector=False)  # stage-1 checkpoint: no projector
    assert torch.equal(head.projector[0].weight, before)
    tokens = torch.randn(2, 4, 16, dtype=torch.float64)
    torch.testing.assert_close(head(tokens).logits, _ref_forward(net_a, net_c, net_p, tokens)[1])


def test_bad_official_keys_are_reported() -> None:
    net_a, net_c, net_p = _official_parts()
    good = official_state_dict_from_parts(net_a.state_dict(), [c.state_dict() for c in net_c], net_p.state_dict())
    head = _small_head()
    bad = dict(good) | {"netA.sab4.mab.fc_q.weight": torch.zeros(16, 16), "netE.0.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys \['netA.sab4.mab.fc_q.weight', 'netE.0.weight'\]"):
        head.load_official_state_dict(bad)
    missing = {k: v for k, v in good.items() if k not in ("netA.mab.ln0.bias", "netC.3.bias")}
    with pytest.raises(CheckpointError, match=r"missing keys \['netA.mab.ln0.bias', 'netC.3.bias'\]"):
        head.load_official_state_dict(missing)
    wrong = dict(good) | {"netA.I": torch.zeros(1, 4, 8)}
    with pytest.raises(CheckpointError, match=r"netA.I: expected \(1, 5, 8\), got \(1, 4, 8\)"):
        head.load_official_state_dict(wrong)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        head.load_official_state_dict(dict(good) | {"netC.5.weight": torch.zeros(1, 8)})  # only 5 labels


# ------------------------------------------------------------------------------------------ gradients / init
def test_every_parameter_gets_a_gradient() -> None:
    head = _small_head()
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
    head = _small_head()
    with pytest.raises(ValueError, match="tokens"):
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
