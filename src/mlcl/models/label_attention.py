"""MulCon's label-level attention head (arXiv 2107.11626; official code github.com/SonDaoDuy/MulCon).

The head turns the spatial tokens of any backbone into one embedding per label, classifies each label from
its own embedding, and (for the contrastive stage) projects the label embeddings onto the unit sphere:

.. code-block:: text

    tokens X (B, N, C) --SAB1--SAB2--> X2 (B, N, C)
    label queries U (L, d) --MAB(Q=U, K=X2)--> H (B, L, d) --SAB3 (across labels)--> G (B, L, d)
    logits  s[b, l] = <G[b, l], W[l]> + c[l]                                   (B, L)
    z[b, l] = normalize(W2 relu(W1 G[b, l] + b1) + b2)                         (B, L, P)

The attention blocks reproduce the official ``ISABMultiLabel`` exactly, including its non-standard details
(see :class:`MAB`): the softmax is scaled by ``1/sqrt(dV)`` with the *full* width ``dV`` (not ``dV/heads``),
the residual adds the *projected* query, LayerNorm comes after the residual (post-LN), the feed-forward is
a single ``Linear + ReLU`` inside a residual, and there is no positional encoding and no dropout.

Module and parameter names follow the official state_dict inside the attention block (``attention.sab1.
mab.fc_q.weight`` <-> official ``netA.sab1.mab.fc_q.weight``), so loading official weights
(:mod:`mlcl.models.mulcon_weights`) is a renaming plus the stacking of the ``L`` official ``nn.Linear(d, 1)``
classifiers into ``classifier_weight`` ``(L, d)`` and ``classifier_bias`` ``(L,)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlcl.errors import ConfigError
from mlcl.models.mulcon_weights import load_official_state_dict, official_state_dict

__all__ = [
    "MAB",
    "SAB",
    "LabelAttention",
    "LabelAttentionHead",
    "LabelAttentionOutput",
    "attention_maps",
    "check_label_attention_args",
]

_HALF = (torch.float16, torch.bfloat16)


def _check_divisible(dim: int, heads: int, name: str) -> None:
    if heads < 1:
        raise ConfigError(f"`heads` must be >= 1, got {heads}")
    if dim < 1 or dim % heads != 0:
        raise ConfigError(f"`{name}`={dim} must be a positive multiple of `heads`={heads}")


def check_label_attention_args(
    *, dim: int = 1024, heads: int = 4, num_sab: int = 2, proj_hidden: int = 1024, proj_dim: int = 128
) -> None:
    """Check the sizes of a :class:`LabelAttentionHead` that do not depend on the backbone.

    :class:`LabelAttentionHead` calls it first; :func:`mlcl.models.create_model` calls it before it builds the
    backbone, so that a bad size fails before any weights are loaded.

    Raises:
        ConfigError: Naming the argument and its value: ``heads`` < 1, ``dim`` not a positive multiple of
            ``heads``, ``num_sab`` not 0, 1 or 2, ``proj_hidden`` or ``proj_dim`` < 1.
    """
    if num_sab not in (0, 1, 2):
        raise ConfigError(f"`num_sab` must be 0, 1 or 2 (the official head has 2), got {num_sab}")
    _check_divisible(dim, heads, "dim")
    if proj_hidden < 1:
        raise ConfigError(f"`proj_hidden` must be >= 1, got {proj_hidden}")
    if proj_dim < 1:
        raise ConfigError(f"`proj_dim` must be >= 1, got {proj_dim}")


class MAB(nn.Module):
    """Multi-head attention block of the Set Transformer, in the exact variant of the official MulCon code.

    With ``h`` heads, width ``dV`` and head width ``dh = dV / h``:

    .. code-block:: text

        q = Q Wq^T + bq,  k = K Wk^T + bk,  v = K Wv^T + bv              (widths dV)
        A_j = softmax(q_j k_j^T / sqrt(dV))    for head j (columns j*dh:(j+1)*dh)
        O_j = q_j + A_j v_j                    (residual on the projected query)
        O = LN0(concat_j O_j);  O = O + relu(O Wo^T + bo);  O = LN1(O)

    No dropout, no positional encoding.

    Args:
        dim_q: Width of the query inputs ``Q``.
        dim_k: Width of the key/value inputs ``K``.
        dim_v: Width ``dV`` of the projections and of the output; a multiple of ``heads``.
        heads: Number of heads ``h``.
        ln_eps: LayerNorm epsilon (``1e-5`` as in the official code).
    """

    def __init__(self, dim_q: int, dim_k: int, dim_v: int, heads: int, ln_eps: float = 1e-5) -> None:
        super().__init__()
        _check_divisible(dim_v, heads, "dim_v")
        self.dim_v = dim_v
        self.heads = heads
        self.fc_q = nn.Linear(dim_q, dim_v)
        self.fc_k = nn.Linear(dim_k, dim_v)
        self.fc_v = nn.Linear(dim_k, dim_v)
        self.ln0 = nn.LayerNorm(dim_v, eps=ln_eps)
        self.ln1 = nn.LayerNorm(dim_v, eps=ln_eps)
        self.fc_o = nn.Linear(dim_v, dim_v)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.dim_v // self.heads).transpose(1, 2)  # (B, h, n, dh)

    def forward(self, q_in: Tensor, k_in: Tensor) -> tuple[Tensor, Tensor]:
        """Attend from ``q_in`` to ``k_in``.

        Args:
            q_in: Queries, shape ``(B, Nq, dim_q)``.
            k_in: Keys/values, shape ``(B, Nk, dim_k)``.

        Returns:
            ``(out, attn)``: ``out`` of shape ``(B, Nq, dV)`` and the attention weights ``attn`` of shape
            ``(B, heads, Nq, Nk)`` (rows sum to 1).
        """
        q = self._split(self.fc_q(q_in))
        k = self._split(self.fc_k(k_in))
        v = self._split(self.fc_v(k_in))
        # Plain matmul + softmax (not F.scaled_dot_product_attention): the cross-attention weights are an
        # output of the head, and the head width dV/h (512 for the official sizes) is outside the fused kernels.
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.dim_v)
        attn = torch.softmax(scores, dim=-1)
        o = q + torch.matmul(attn.to(v.dtype), v)
        b, _, nq, _ = o.shape
        o = o.transpose(1, 2).reshape(b, nq, self.dim_v)
        o = self.ln0(o)
        o = o + F.relu(self.fc_o(o))
        return self.ln1(o), attn


class SAB(nn.Module):
    """Set self-attention block ``SAB(X) = MAB(X, X)`` (the official class wraps the MAB as ``.mab``).

    Args:
        dim_in: Input width.
        dim_out: Output width ``dV`` (a multiple of ``heads``).
        heads: Number of heads.
        ln_eps: LayerNorm epsilon.
    """

    def __init__(self, dim_in: int, dim_out: int, heads: int, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.mab = MAB(dim_in, dim_in, dim_out, heads, ln_eps=ln_eps)

    def forward(self, x: Tensor) -> Tensor:
        """Self-attention over the set ``x`` of shape ``(B, N, dim_in)``; returns ``(B, N, dim_out)``."""
        return self.mab(x, x)[0]


class LabelAttention(nn.Module):
    """The label-wise attention block (official ``ISABMultiLabel``, the ``netA`` of the checkpoints).

    .. code-block:: text

        X1 = SAB1(X), X2 = SAB2(X1)                   (B, N, dim_in)   token self-attention
        H  = MAB(Q = U, K = X2)                       (B, L, d)        U: learnable label queries (L, d)
        G  = SAB3(H)                                  (B, L, d)        self-attention across labels

    Args:
        dim_in: Token width ``C`` (a multiple of ``heads`` when ``num_sab > 0``).
        dim: Label-embedding width ``d`` (a multiple of ``heads``).
        heads: Number of heads of every block.
        num_classes: Number of labels ``L``.
        num_sab: Token self-attention blocks before the cross-attention: 2 as in the official code
            (``sab1``, ``sab2``), or 1 / 0 for a lighter head.
        ln_eps: LayerNorm epsilon.

    Attributes:
        I: The label queries ``U``, parameter of shape ``(1, L, d)`` (official name and shape).
    """

    def __init__(
        self, dim_in: int, dim: int, heads: int, num_classes: int, num_sab: int = 2, ln_eps: float = 1e-5
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"`num_classes` must be >= 1, got {num_classes}")
        if num_sab not in (0, 1, 2):
            raise ConfigError(f"`num_sab` must be 0, 1 or 2 (the official head has 2), got {num_sab}")
        _check_divisible(dim, heads, "dim")
        if num_sab > 0:
            _check_divisible(dim_in, heads, "in_dim")
        self.num_sab = num_sab
        self.I = nn.Parameter(torch.empty(1, num_classes, dim))
        self.mab = MAB(dim, dim_in, dim, heads, ln_eps=ln_eps)
        if num_sab >= 1:
            self.sab1 = SAB(dim_in, dim_in, heads, ln_eps=ln_eps)
        if num_sab >= 2:
            self.sab2 = SAB(dim_in, dim_in, heads, ln_eps=ln_eps)
        self.sab3 = SAB(dim, dim, heads, ln_eps=ln_eps)
        nn.init.xavier_uniform_(self.I)

    def token_blocks(self) -> list[SAB]:
        """The token self-attention blocks in order (``sab1``, ``sab2``; fewer when ``num_sab < 2``)."""
        return [getattr(self, f"sab{i + 1}") for i in range(self.num_sab)]

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Compute label-level embeddings.

        Args:
            tokens: ``(B, N, dim_in)``.

        Returns:
            ``(G, attn)``: label embeddings ``(B, L, d)`` and the cross-attention weights of the ``mab`` block,
            ``(B, heads, L, N)``.
        """
        x = tokens
        for block in self.token_blocks():
            x = block(x)
        queries = self.I.expand(x.shape[0], -1, -1)
        h, attn = self.mab(queries, x)
        return self.sab3(h), attn


class LabelAttentionOutput(NamedTuple):
    """Output of :class:`LabelAttentionHead`.

    Attributes:
        logits: ``(B, L)`` per-label logits ``s[b, l] = <G[b, l], W[l]> + c[l]``.
        label_emb: ``(B, L, d)`` label-level embeddings ``G``.
        attn: ``(B, heads, L, N)`` cross-attention weights of each head (label queries over tokens; each
            row sums to 1). :func:`~mlcl.models.mulcon_weights.official_attn_layout` gives the official
            ``(heads*B, L, N)`` layout and :func:`attention_maps` the head-averaged ``(B, L, H, W)`` maps.
    """

    logits: Tensor
    label_emb: Tensor
    attn: Tensor


class LabelAttentionHead(nn.Module):
    """MulCon head: label-wise attention block, ``L`` per-label linear classifiers and a shared projector.

    Input tokens come from any backbone: a CNN map ``(B, C, H, W)`` flattened with token index ``h*W + w``
    (:func:`~mlcl.models.backbone.feature_map_to_tokens`), or transformer patch tokens with the prefix
    (class/register) tokens dropped. There is no positional encoding: the head is invariant to a permutation of
    the tokens.

    Args:
        in_dim: Token width ``C`` (2048 for ResNet-101).
        num_classes: Number of labels ``L``.
        dim: Label-embedding width ``d`` (official 1024).
        heads: Number of attention heads (official 4). ``in_dim`` and ``dim`` must be multiples of it.
        num_sab: Token self-attention blocks before the label cross-attention (official 2).
        proj_hidden: Hidden width of the projector (official ``d`` = 1024).
        proj_dim: Output width ``P`` of the projector (official 128).
        ln_eps: LayerNorm epsilon (official 1e-5).

    Attributes:
        attention: :class:`LabelAttention` (official ``netA``).
        classifier_weight: ``(L, d)``, row ``l`` is the weight of the official ``netC[l]`` ``Linear(d, 1)``.
        classifier_bias: ``(L,)``.
        projector: ``Sequential(Linear(d, proj_hidden), ReLU, Linear(proj_hidden, proj_dim))`` (``netP``).
            Only used by :meth:`project` (stage 2); freeze it or let DDP find unused parameters in stage 1.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        dim: int = 1024,
        heads: int = 4,
        num_sab: int = 2,
        proj_hidden: int = 1024,
        proj_dim: int = 128,
        ln_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        check_label_attention_args(dim=dim, heads=heads, num_sab=num_sab, proj_hidden=proj_hidden, proj_dim=proj_dim)
        if in_dim < 1:
            raise ConfigError(f"`in_dim` must be >= 1, got {in_dim}")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.dim = dim
        self.heads = heads
        self.attention = LabelAttention(in_dim, dim, heads, num_classes, num_sab=num_sab, ln_eps=ln_eps)
        self.classifier_weight = nn.Parameter(torch.empty(num_classes, dim))
        self.classifier_bias = nn.Parameter(torch.empty(num_classes))
        self.projector = nn.Sequential(nn.Linear(dim, proj_hidden), nn.ReLU(), nn.Linear(proj_hidden, proj_dim))
        self.reset_parameters_official()

    @torch.no_grad()
    def reset_parameters_official(self) -> None:
        """The official ``init_net`` initialisation (the default).

        Every linear weight (attention, classifiers, projector) ~ N(0, 0.02) and bias 0; LayerNorm weight 1,
        bias 0; label queries ``I`` xavier-uniform on their ``(1, L, d)`` shape.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier_weight, 0.0, 0.02)
        nn.init.zeros_(self.classifier_bias)
        nn.init.xavier_uniform_(self.attention.I)

    def forward(self, tokens: Tensor) -> LabelAttentionOutput:
        """Label embeddings, logits and cross-attention weights.

        Args:
            tokens: ``(B, N, in_dim)`` backbone tokens.

        Returns:
            :class:`LabelAttentionOutput` with ``logits`` ``(B, L)``, ``label_emb`` ``(B, L, d)`` and
            ``attn`` ``(B, heads, L, N)``.
        """
        if not isinstance(tokens, Tensor) or tokens.ndim != 3 or tokens.shape[-1] != self.in_dim:
            got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"`tokens` must have shape (B, N, in_dim={self.in_dim}), got {got}")
        if tokens.shape[1] == 0:
            raise ValueError("`tokens` must hold at least one token (N >= 1), got N=0")
        g, attn = self.attention(tokens)
        logits = (g * self.classifier_weight).sum(-1) + self.classifier_bias
        return LabelAttentionOutput(logits=logits, label_emb=g, attn=attn)

    def project(self, label_emb: Tensor) -> Tensor:
        """Projector then L2 normalisation: ``z = normalize(W2 relu(W1 g + b1) + b2)``.

        Args:
            label_emb: ``(..., d)``, usually ``(B, L, d)``.

        Returns:
            ``(..., proj_dim)`` unit vectors; float32 when the projector ran in half precision (autocast),
            otherwise the input dtype.
        """
        p = self.projector(label_emb)
        if p.dtype in _HALF:
            p = p.float()
        return F.normalize(p, dim=-1)

    @staticmethod
    def attention_maps(attn: Tensor, hw: tuple[int, int]) -> Tensor:
        """Head-averaged attention maps ``(B, L, H, W)``; see :func:`attention_maps`."""
        return attention_maps(attn, hw)

    # ----------------------------------------------------------------------------------------- official weights
    def load_official_state_dict(self, state_dict: Mapping[str, Tensor], *, require_projector: bool = True) -> None:
        """Load weights saved by the official MulCon code (strict).

        See :func:`mlcl.models.mulcon_weights.load_official_state_dict` for the accepted key forms.

        Args:
            state_dict: Mapping from official names to tensors.
            require_projector: When False, missing ``netP`` keys are allowed (stage-1 checkpoints).

        Raises:
            CheckpointError: Listing the missing and unexpected keys, or the keys whose shapes differ.
        """
        load_official_state_dict(self, state_dict, require_projector=require_projector)

    def official_state_dict(self) -> dict[str, Tensor]:
        """This head's weights under the official names (``netA.*``, ``netC.<l>.weight/bias``, ``netP.*``)."""
        return official_state_dict(self)


def attention_maps(attn: Tensor, hw: tuple[int, int]) -> Tensor:
    """Per-label spatial attention maps for visualisation.

    Args:
        attn: ``(B, heads, L, N)`` (averaged over heads) or ``(B, L, N)`` weights, with ``N = H*W`` tokens in
            row-major order (token ``h*W + w``, the order of :func:`mlcl.models.backbone.feature_map_to_tokens`
            and of ViT patches).
        hw: The token grid ``(H, W)``.

    Returns:
        ``(B, L, H, W)``; each map sums to 1 over the grid.
    """
    if attn.ndim == 4:
        attn = attn.mean(dim=1)
    if attn.ndim != 3:
        raise ValueError(f"`attn` must have shape (B, heads, L, N) or (B, L, N), got {tuple(attn.shape)}")
    height, width = int(hw[0]), int(hw[1])
    if height * width != attn.shape[-1]:
        raise ValueError(f"`hw`={tuple(hw)} does not match the {attn.shape[-1]} tokens of `attn`")
    return attn.reshape(attn.shape[0], attn.shape[1], height, width)
