"""ResNet and FPN: parameter names/shapes, feature sizes, frozen stages, norm_eval, init."""

import pytest
import torch
from torch import nn

from mmdet.models import build_backbone, build_neck
from mmdet.models.backbones import BasicBlock, Bottleneck, ResNet
from mmdet.models.necks import FPN
from mmdet.models.utils import ConvModule

CHANNELS = [8, 16, 32, 64]  # a narrow ResNet-18 (base_channels 8): same strides, cheap on CPU


@pytest.fixture(scope="module")
def narrow_features():
    backbone = ResNet(18, base_channels=8).eval()
    with torch.no_grad():
        return backbone(torch.randn(1, 3, 800, 1088))


def test_resnet50_names_and_counts_match_the_model_zoo():
    model = build_backbone(dict(type="ResNet", depth=50))
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 23_508_032
    assert len(state) == 318  # 53 BN x 5 + 53 conv weights
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert "layer3.5.bn3.num_batches_tracked" in state and "layer3.6.conv1.weight" not in state
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert [name for name, _ in model.layer1[0].named_children()] == [
        "conv1",
        "bn1",
        "conv2",
        "bn2",
        "conv3",
        "bn3",
        "relu",
        "downsample",
    ]


def test_resnet101_blocks():
    model = ResNet(101)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert sum(p.numel() for p in model.parameters()) == 42_500_160


def test_narrow_resnet18_widths_and_blocks():
    model = ResNet(18, base_channels=16)
    state = model.state_dict()
    assert state["conv1.weight"].shape == (16, 3, 7, 7)
    assert state["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert state["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert model.layer1[0].downsample is None
    assert isinstance(model.layer1[0], BasicBlock) and model.layer2[0].conv1.stride == (2, 2)
    assert ResNet(34, stem_channels=32, base_channels=16).layer1[0].downsample is not None


def test_caffe_style_strides_first_conv():
    block = ResNet(50, style="caffe", base_channels=8).layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)


def test_feature_sizes_for_800x1088(narrow_features):
    assert [tuple(c.shape[1:]) for c in narrow_features] == [(8, 200, 272), (16, 100, 136), (32, 50, 68), (64, 25, 34)]
    faster_fpn = FPN(CHANNELS, 16, num_outs=5).eval()
    retina_fpn = FPN(CHANNELS, 16, num_outs=5, start_level=1, add_extra_convs="on_input").eval()
    with torch.no_grad():
        faster_outs = faster_fpn(narrow_features)
        retina_outs = retina_fpn(narrow_features)
    assert [tuple(p.shape[2:]) for p in faster_outs] == [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    assert [tuple(p.shape[2:]) for p in retina_outs] == [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    assert all(p.shape[1] == 16 for p in faster_outs + retina_outs)


def test_fpn_forward_matches_a_hand_computation(narrow_features):
    """Recompute the FPN outputs by hand from its convs (size-based nearest upsampling, P6 from C5, no ReLU before
    P7)."""
    fpn = FPN(CHANNELS, 16, num_outs=5, start_level=1, add_extra_convs="on_input").eval()
    c3, c4, c5 = narrow_features[1:]
    with torch.no_grad():
        l5 = fpn.lateral_convs[2].conv(c5)
        l4 = fpn.lateral_convs[1].conv(c4) + nn.functional.interpolate(l5, size=c4.shape[2:], mode="nearest")
        l3 = fpn.lateral_convs[0].conv(c3) + nn.functional.interpolate(l4, size=c3.shape[2:], mode="nearest")
        p6 = fpn.fpn_convs[3].conv(c5)
        expected = [
            fpn.fpn_convs[0].conv(l3),
            fpn.fpn_convs[1].conv(l4),
            fpn.fpn_convs[2].conv(l5),
            p6,
            fpn.fpn_convs[4].conv(p6),
        ]
        outs = fpn(narrow_features)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref)
    with torch.no_grad():
        faster = FPN(CHANNELS, 16, num_outs=5).eval()
        faster_outs = faster(narrow_features)
    torch.testing.assert_close(faster_outs[4], faster_outs[3][:, :, ::2, ::2])


def test_fpn_state_dict_keys_and_init():
    retina = build_neck(
        dict(
            type="FPN",
            in_channels=[256, 512, 1024, 2048],
            out_channels=256,
            start_level=1,
            add_extra_convs="on_input",
            num_outs=5,
        )
    )
    state = retina.state_dict()
    assert sorted({k.rsplit(".", 2)[0] for k in state}) == [
        *(f"fpn_convs.{i}" for i in range(5)),
        *(f"lateral_convs.{i}" for i in range(3)),
    ]
    assert state["fpn_convs.3.conv.weight"].shape == (256, 2048, 3, 3)
    assert state["lateral_convs.0.conv.weight"].shape == (256, 512, 1, 1)
    assert all(isinstance(m, ConvModule) and m.activate is None and m.norm is None for m in retina.fpn_convs)
    assert all(torch.count_nonzero(m.conv.bias) == 0 for m in retina.lateral_convs)
    bound = (6 / (256 * 9 + 256 * 9)) ** 0.5  # Xavier-uniform bound of a 256->256 3x3 conv
    weight = retina.fpn_convs[0].conv.weight.detach()
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.9 * bound
    faster = FPN([256, 512, 1024, 2048], 256, num_outs=5)
    assert len(faster.fpn_convs) == 4 and len(faster.state_dict()) == 16


def test_fpn_rejects_bad_options():
    with pytest.raises(ValueError, match="add_extra_convs"):
        FPN(CHANNELS, 16, 5, add_extra_convs="on_top")
    with pytest.raises(ValueError, match="num_outs"):
        FPN(CHANNELS, 16, 2)


def test_zero_init_residual_and_kaiming():
    model = ResNet(50, base_channels=8)
    block = model.layer1[0]
    assert torch.count_nonzero(block.bn3.weight) == 0 and torch.count_nonzero(block.bn3.bias) == 0
    assert torch.all(block.bn1.weight == 1)
    assert torch.all(ResNet(50, base_channels=8, zero_init_residual=False).layer1[0].bn3.weight == 1)
    assert torch.count_nonzero(ResNet(18, base_channels=8).layer1[0].bn2.weight) == 0
    fan_out = 8 * 7 * 7
    assert abs(float(model.conv1.weight.detach().std()) - (2 / fan_out) ** 0.5) < 0.02


def test_frozen_stages_and_norm_eval():
    model = ResNet(18, base_channels=8, frozen_stages=1, norm_eval=True)
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.layer1.training and model.layer2.training
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = model.layer2[0].bn1.running_mean.clone()
    out = model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(model.layer2[0].bn1.running_mean, before)  # statistics not updated
    sum(o.sum() for o in out).backward()
    assert model.layer2[0].bn1.weight.grad is not None and model.conv1.weight.grad is None


def test_bn_trains_without_norm_eval():
    model = ResNet(18, base_channels=8, frozen_stages=-1, norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(p.requires_grad for p in model.parameters())
    before = model.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(model.layer2[0].bn1.running_mean, before)


def test_norm_cfg_requires_grad_false_and_bad_depth():
    model = ResNet(18, base_channels=8, norm_cfg=dict(type="BN", requires_grad=False))
    assert not model.bn1.weight.requires_grad and model.conv1.weight.requires_grad
    with pytest.raises(KeyError, match="depth 42"):
        ResNet(42)


def test_pretrained_is_recorded_not_loaded(tmp_path):
    source = ResNet(18, base_channels=8)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = ResNet(18, base_channels=8, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    assert not torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.load_pretrained()
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    assert not ResNet(18, base_channels=8).load_pretrained()


def test_out_indices_subset():
    model = ResNet(50, base_channels=8, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 256] and model.out_channels == [64, 256]
    assert isinstance(model.layer4[0], Bottleneck)
