"""The split of a timm backbone after its first stages, against the backbones' own layers called by hand."""

from __future__ import annotations

import pytest
import timm
import torch

from mlcl.errors import ConfigError
from mlcl.models.trunk import backbone_stages, split_backbone


def _images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_stage_counts_are_timms_coarse_groups() -> None:
    assert len(backbone_stages(timm.create_model("tf_efficientnet_lite0", num_classes=0))[1]) == 7
    assert len(backbone_stages(timm.create_model("resnet10t", num_classes=0))[1]) == 4


@torch.no_grad()
def test_resnet_split_after_two_stages_matches_its_layers() -> None:
    m = timm.create_model("resnet10t", num_classes=0).eval()
    split = split_backbone(m, 2, image_size=64)
    x = _images()
    # The ResNet's forward_features written out: stem, then layer1 .. layer4.
    h = m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x))))))
    torch.testing.assert_close(split.trunk(x), h, rtol=0, atol=0)
    torch.testing.assert_close(split.rest(h), m.layer4(m.layer3(h)), rtol=0, atol=0)
    assert split.frozen == ["act1", "bn1", "conv1", "layer1", "layer2", "maxpool"]
    # The rest is a shallow copy: the model itself still has every module, and they share parameters.
    assert isinstance(m.layer1, torch.nn.Sequential)
    assert split._rest.layer3 is m.layer3


@torch.no_grad()
def test_efficientnet_split_keeps_the_head_convolution_in_the_rest() -> None:
    m = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    split = split_backbone(m, 3, image_size=64)
    x = _images()
    h = m.blocks[2](m.blocks[1](m.blocks[0](m.bn1(m.conv_stem(x)))))
    torch.testing.assert_close(split.trunk(x), h, rtol=0, atol=0)
    expected = m.bn2(m.conv_head(m.blocks[6](m.blocks[5](m.blocks[4](m.blocks[3](h))))))
    torch.testing.assert_close(split.rest(h), expected, rtol=0, atol=0)


@pytest.mark.parametrize("stages", [0, 5, 9])
def test_out_of_range_stage_counts_are_one_line_errors(stages: int) -> None:
    m = timm.create_model("resnet10t", num_classes=0)
    with pytest.raises(ConfigError, match=r"`train.freeze`=\d+: resnet10t has 4 stages; give 1 to 4") as e:
        split_backbone(m, stages, image_size=32, name="resnet10t")
    assert "\n" not in str(e.value)


def test_a_vit_cannot_be_split_and_says_so() -> None:
    m = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8)
    with pytest.raises(ConfigError, match="cannot be split after 2 stage.*train.freeze=all"):
        split_backbone(m, 2, image_size=32, name="vit")


def test_the_split_draws_nothing_and_restores_modes() -> None:
    m = timm.create_model("resnet10t", num_classes=0).train()
    before = torch.get_rng_state()
    split_backbone(m, 1, image_size=32)
    assert torch.equal(before, torch.get_rng_state())
    assert all(mod.training for mod in m.modules())
