"""Batch norm folded into convolutions: the same function as the unfolded model (in float64), and only the pairs
whose data flow allows it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mlcl.models.batchnorm_folding import conv_batchnorm_pairs, fold_batchnorm
from mlcl.models.factory import create_model


def _randomise_batchnorm(model: nn.Module, seed: int = 1) -> int:
    """Non-trivial running statistics and affine weights in every batch-norm layer (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    n_layers = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.6 + 0.7)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                n_layers += 1
    return n_layers


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize(
    ("backbone", "size"),
    [
        ("tf_efficientnet_lite0", 64),  # timm's Conv2dSame + BatchNormAct2d (batch norm, dropout, ReLU6 in one)
        ("resnet10t", 48),  # plain nn.BatchNorm2d, a downsampling branch, residual sums after the batch norm
    ],
)
def test_folded_model_equals_the_unfolded_one(backbone: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(backbone, 5).eval()
    n_bn = _randomise_batchnorm(model)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded, torch.zeros(1, 3, size, size)) == n_bn
    assert _batchnorms(folded) == 0 and not folded.training
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = copy.deepcopy(model).double()(x.double())  # the unfolded model, in float64
        got = folded(x)
    torch.testing.assert_close(torch.sigmoid(got.logits).double(), torch.sigmoid(reference.logits), rtol=0, atol=1e-5)
    torch.testing.assert_close(got.embedding.double(), reference.embedding, rtol=1e-5, atol=1e-5)


class _Shared(nn.Module):
    """Pairs that must not be folded: an output read twice, an in-place change, a module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c, self.bn_c = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.d, self.bn_d = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.e, self.bn_e = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        x = self.bn_a(y) + y  # the convolution's output is read twice
        y = self.b(x)
        y += 1.0  # changed in place before its batch norm
        x = self.bn_b(y)
        x = self.bn_c(self.c(x))  # the only foldable pair
        x = self.bn_d(self.d(x))
        return self.bn_e(self.d(x))  # `d` runs twice, with two batch norms


def test_only_pairs_the_data_flow_allows_are_folded() -> None:
    torch.manual_seed(0)
    model = _Shared().eval()
    _randomise_batchnorm(model)
    x = torch.randn(2, 3, 8, 8)
    assert conv_batchnorm_pairs(model, x) == [("c", "bn_c")]
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded, x) == 1
    assert isinstance(folded.bn_c, nn.Identity) and isinstance(folded.bn_a, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x).double(), copy.deepcopy(model).double()(x.double()), rtol=0, atol=1e-5)


def test_a_model_without_batchnorm_is_unchanged() -> None:
    model = create_model("test_convnext", 3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fold_batchnorm(model, torch.zeros(1, 3, 32, 32)) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
