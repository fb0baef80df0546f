"""Loading MulCon's official checkpoints into the label-attention head (``mlcl.models.mulcon_weights``).

The official-weights round trip compares with a small reference written here from the spec in
``reference/mulcon.md`` (b): modules named like the official ones (``sab1.mab.fc_q`` ..., a list of
``Linear(d, 1)`` classifiers, a ``Sequential`` projector) and the official head-major attention layout.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlcl.errors import CheckpointError
from mlcl.models.mulcon_weights import official_attn_layout, official_state_dict_from_parts
from tests.helpers.label_attention import randomise, small_head


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


def _official_parts(d_in: int = 16, d: int = 8, heads: int = 4, L: int = 5, hidden: int = 12, proj: int = 6):
    net_a = RefNetA(d_in, d, heads, L).double()
    net_c = [nn.Linear(d, 1).double() for _ in range(L)]
    net_p = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj)).double()
    for m in [net_a, *net_c, net_p]:
        randomise(m)
    return net_a, net_c, net_p


def _ref_forward(net_a, net_c, net_p, tokens):
    g, a = net_a(tokens)
    logits = torch.stack([net_c[i](g[:, i]).squeeze(-1) for i in range(len(net_c))], dim=1)
    z = F.normalize(net_p(g.reshape(-1, g.shape[-1])), dim=1)
    return g, logits, z, a


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
    head = small_head()
    head.load_official_state_dict(sd)
    tokens = torch.randn(3, 6, 16, dtype=torch.float64)
    g, logits, z, a = _ref_forward(net_a, net_c, net_p, tokens)
    out = head(tokens)
    torch.testing.assert_close(out.label_emb, g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.logits, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head.project(out.label_emb).reshape(-1, 6), z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(official_attn_layout(out.attn), a, rtol=1e-12, atol=1e-12)
    # Export back to official names and into a fresh head: identical parameters.
    again = small_head()
    again.load_official_state_dict(head.official_state_dict())
    for (k1, v1), (k2, v2) in zip(head.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_load_stacked_classifier_and_stage_one_checkpoint() -> None:
    net_a, net_c, net_p = _official_parts()
    sd = {f"netA.{k}": v for k, v in net_a.state_dict().items()}
    sd["netC.weight"] = torch.cat([c.weight for c in net_c]).detach()
    sd["netC.bias"] = torch.cat([c.bias for c in net_c]).detach()
    head = small_head()
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
    head = small_head()
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
