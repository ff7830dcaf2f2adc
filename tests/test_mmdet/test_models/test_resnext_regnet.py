"""ResNeXt and RegNet backbones and their zoo configs: state-dict names, shapes and counts of the mmdetection 2.28.2
model-zoo checkpoints, stage widths and strides, styles, frozen stages, and the three configs.

Counts and shapes are the spec's (mmdet-2.28-more-detectors.md, sections 1.2, 1.3, 9 and 10); the RegNet widths of
the archs the spec does not tabulate are the FPN ``in_channels`` of the zoo configs that use them. The key/shape
digests were recorded from the models built (by this code) from the real mmdetection 2.28.2 config files; our config
files must build the same models.
"""

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from mmdet.models import build_backbone, build_detector
from mmdet.models.backbones import Bottleneck, RegNet, RegNetBottleneck, ResNet, ResNeXt, ResNeXtBottleneck
from mmdet.models.backbones.regnet import REGNETX_ARCHS, regnet_stages
from mmdet.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[3]
BLOCK_CHILDREN = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample"]


def _entries(model: nn.Module) -> tuple[int, int, int]:
    """(state-dict entries, entries without num_batches_tracked, parameters)."""
    state = model.state_dict()
    without_nbt = sum(not k.endswith("num_batches_tracked") for k in state)
    return len(state), without_nbt, sum(p.numel() for p in model.parameters())


def _digest(model: nn.Module) -> str:
    lines = "\n".join(f"{k}:{list(v.shape)}" for k, v in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------- ResNeXt


@pytest.fixture(scope="module")
def x101_32x4d():
    return build_backbone(dict(type="ResNeXt", depth=101, groups=32, base_width=4))


def test_resnext101_32x4d_names_shapes_and_counts(x101_32x4d):
    state = x101_32x4d.state_dict()
    assert _entries(x101_32x4d) == (624, 520, 42_128_704)
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (128, 64, 1, 1),
        "layer1.0.bn1.weight": (128,),
        "layer1.0.conv2.weight": (128, 4, 3, 3),
        "layer1.0.bn2.running_var": (128,),
        "layer1.0.conv3.weight": (256, 128, 1, 1),
        "layer1.0.bn3.weight": (256,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_mean": (256,),
        "layer2.0.conv2.weight": (256, 8, 3, 3),
        "layer3.22.conv2.weight": (512, 16, 3, 3),
        "layer4.0.conv2.weight": (1024, 32, 3, 3),
        "layer4.0.conv3.weight": (2048, 1024, 1, 1),
        "layer4.2.bn3.num_batches_tracked": (),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "layer3.23.conv1.weight" not in state and "layer1.1.downsample.0.weight" not in state
    assert [len(getattr(x101_32x4d, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert x101_32x4d.out_channels == [256, 512, 1024, 2048]
    assert x101_32x4d.layer4[0].conv2.groups == 32 and x101_32x4d.layer1[1].conv2.groups == 32


def test_resnext_block_is_a_bottleneck_with_the_same_children(x101_32x4d):
    block = x101_32x4d.layer2[0]
    assert type(block) is ResNeXtBottleneck and isinstance(block, Bottleneck)
    assert [name for name, _ in block.named_children()] == BLOCK_CHILDREN
    assert block.width == 256 and block.groups == 32
    assert all(not isinstance(m, nn.MaxPool2d) for m in block.modules())


@pytest.mark.parametrize(
    "groups, base_width, widths",
    [(32, 4, [128, 256, 512, 1024]), (64, 4, [256, 512, 1024, 2048]), (32, 8, [256, 512, 1024, 2048])],
)
def test_resnext_inner_widths(groups, base_width, widths):
    model = ResNeXt(50, groups=groups, base_width=base_width)
    state = model.state_dict()
    for i, width in enumerate(widths, start=1):
        assert state[f"layer{i}.1.conv1.weight"].shape[0] == width
        assert tuple(state[f"layer{i}.0.conv2.weight"].shape) == (width, width // groups, 3, 3)
        assert tuple(state[f"layer{i}.0.conv3.weight"].shape) == (64 * 2 ** (i - 1) * 4, width, 1, 1)
    if (groups, base_width) == (32, 4):
        assert _entries(model)[2] == 22_979_904


def test_resnext_with_one_group_is_resnet():
    resnext, resnet = ResNeXt(50, groups=1, base_width=4), ResNet(50)
    assert {k: v.shape for k, v in resnext.state_dict().items()} == {k: v.shape for k, v in resnet.state_dict().items()}


def test_resnext_styles_strides_and_feature_sizes():
    pytorch = ResNeXt(50, groups=32, base_width=4).eval()
    caffe = ResNeXt(50, groups=32, base_width=4, style="caffe").eval()
    for layer in ("layer2", "layer3", "layer4"):
        first_p, first_c = getattr(pytorch, layer)[0], getattr(caffe, layer)[0]
        assert first_p.conv1.stride == (1, 1) and first_p.conv2.stride == (2, 2)
        assert first_c.conv1.stride == (2, 2) and first_c.conv2.stride == (1, 1)
        assert first_p.downsample[0].stride == first_c.downsample[0].stride == (2, 2)
    assert {k: v.shape for k, v in pytorch.state_dict().items()} == {k: v.shape for k, v in caffe.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        shapes = [[tuple(o.shape[1:]) for o in model(x)] for model in (pytorch, caffe)]
    assert shapes[0] == shapes[1] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]


def test_resnext_frozen_stages_norm_eval_and_zero_init():
    model = ResNeXt(50, groups=32, base_width=4, frozen_stages=1, norm_eval=True).train()
    assert all(not p.requires_grad for m in (model.conv1, model.bn1, model.layer1) for p in m.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.layer1.training and model.layer2.training
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.count_nonzero(model.layer2[0].bn3.weight) == 0
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_resnext_rejects_bad_arguments():
    with pytest.raises(KeyError, match="depth 18"):
        ResNeXt(18, groups=32)
    with pytest.raises(ValueError, match="groups"):
        ResNeXt(50, groups=0)


# ------------------------------------------------------------------------------------------------------ RegNet

# arch -> (stage widths = FPN in_channels of the zoo configs, blocks per stage, groups per stage); None: not in spec
REGNET_STAGES = {
    "regnetx_400mf": ([32, 64, 160, 384], (1, 2, 7, 12), [2, 4, 10, 24]),
    "regnetx_800mf": ([64, 128, 288, 672], (1, 3, 7, 5), [4, 8, 18, 42]),
    "regnetx_1.6gf": ([72, 168, 408, 912], (2, 4, 10, 2), [3, 7, 17, 38]),
    "regnetx_3.2gf": ([96, 192, 432, 1008], (2, 6, 15, 2), [2, 4, 9, 21]),
    "regnetx_4.0gf": ([80, 240, 560, 1360], (2, 5, 14, 2), [2, 6, 14, 34]),
    "regnetx_6.4gf": ([168, 392, 784, 1624], None, None),
    "regnetx_8.0gf": ([80, 240, 720, 1920], None, None),
    "regnetx_12gf": ([224, 448, 896, 2240], None, None),
}
# arch -> (state-dict entries, without num_batches_tracked, parameters) of the backbone
REGNET_COUNTS = {
    "regnetx_400mf": (426, 355, 4_772_512),
    "regnetx_800mf": (318, 265, 6_586_656),
    "regnetx_1.6gf": (354, 295, 8_277_136),
    "regnetx_3.2gf": (480, 400, 14_287_552),
    "regnetx_4.0gf": (444, 370, 20_757_248),
}


@pytest.mark.parametrize("arch", list(REGNET_STAGES))
def test_regnet_stage_widths_depths_and_groups(arch):
    widths, depths, groups = REGNET_STAGES[arch]
    stages = regnet_stages(**REGNETX_ARCHS[arch])
    assert [w for w, _, _ in stages] == widths
    if depths is not None:
        assert tuple(n for _, n, _ in stages) == depths
        assert [w // g for w, _, g in stages] == groups
    model = RegNet(arch)
    assert model.out_channels == widths and model.stage_widths == widths
    for i, (width, count, group_width) in enumerate(stages, start=1):
        layer = getattr(model, f"layer{i}")
        assert len(layer) == count
        assert all(tuple(block.conv2.weight.shape) == (width, group_width, 3, 3) for block in layer)
        assert all(block.conv2.groups == width // group_width for block in layer)
    if arch in REGNET_COUNTS:
        assert _entries(model) == REGNET_COUNTS[arch]


def test_regnet_rounds_half_to_even():
    # 392 / 16 = 24.5 rounds to 24 (384), not 25 (400); 24 / 16 = 1.5 rounds to 2 (32)
    assert [w for w, _, _ in regnet_stages(**REGNETX_ARCHS["regnetx_400mf"])] == [32, 64, 160, 384]


def test_regnet_3_2gf_names_and_shapes():
    model = build_backbone(dict(type="RegNet", arch="regnetx_3.2gf"))
    state = model.state_dict()
    expected = {
        "conv1.weight": (32, 3, 3, 3),
        "bn1.running_mean": (32,),
        "layer1.0.conv1.weight": (96, 32, 1, 1),
        "layer1.0.conv2.weight": (96, 48, 3, 3),
        "layer1.0.conv3.weight": (96, 96, 1, 1),
        "layer1.0.bn3.weight": (96,),
        "layer1.0.downsample.0.weight": (96, 32, 1, 1),
        "layer1.0.downsample.1.weight": (96,),
        "layer1.1.conv1.weight": (96, 96, 1, 1),
        "layer2.0.downsample.0.weight": (192, 96, 1, 1),
        "layer3.14.conv2.weight": (432, 48, 3, 3),
        "layer4.0.conv2.weight": (1008, 48, 3, 3),
        "layer4.1.bn3.num_batches_tracked": (),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "layer1.1.downsample.0.weight" not in state and "layer4.2.conv1.weight" not in state
    assert not hasattr(model, "maxpool") and not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.conv1.stride == (2, 2) and model.conv1.padding == (1, 1)


def test_regnet_block_is_a_bottleneck_without_expansion():
    model = RegNet("regnetx_400mf")
    block = model.layer1[0]
    assert type(block) is RegNetBottleneck and isinstance(block, ResNeXtBottleneck) and isinstance(block, Bottleneck)
    assert RegNetBottleneck.expansion == 1 and Bottleneck.expansion == 4
    assert [name for name, _ in block.named_children()] == BLOCK_CHILDREN
    # every stage's first block projects the identity, even 32 -> 32 channels (stride 2)
    assert block.downsample is not None and tuple(block.downsample[0].weight.shape) == (32, 32, 1, 1)
    assert all(getattr(model, f"layer{i}")[0].downsample is not None for i in range(1, 5))


def test_regnet_strides_styles_and_feature_sizes():
    model = RegNet("regnetx_400mf").eval()
    caffe = RegNet("regnetx_400mf", style="caffe").eval()
    for i in range(1, 5):
        first, first_caffe = getattr(model, f"layer{i}")[0], getattr(caffe, f"layer{i}")[0]
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
        assert first_caffe.conv1.stride == (2, 2) and first_caffe.conv2.stride == (1, 1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
        caffe_outs = caffe(x)
    expected = [(32, 16, 16), (64, 8, 8), (160, 4, 4), (384, 2, 2)]
    assert [tuple(o.shape[1:]) for o in outs] == [tuple(o.shape[1:]) for o in caffe_outs] == expected
    subset = RegNet("regnetx_400mf", out_indices=(1, 3)).eval()
    with torch.no_grad():
        assert [o.shape[1] for o in subset(x)] == [64, 384] == subset.out_channels


def test_regnet_frozen_stages_norm_eval_and_init():
    model = RegNet("regnetx_400mf", frozen_stages=1, norm_eval=True).train()
    assert all(not p.requires_grad for m in (model.conv1, model.bn1, model.layer1) for p in m.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.layer1.training and model.layer2.training
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    out = model(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in out).backward()
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None
    assert torch.count_nonzero(model.layer2[0].bn3.weight) == 0 and torch.all(model.layer2[0].bn1.weight == 1)
    trainable = RegNet("regnetx_400mf", norm_eval=False, zero_init_residual=False).train()
    assert all(m.training for m in trainable.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.all(trainable.layer2[0].bn3.weight == 1)


def test_regnet_explicit_arch_and_errors():
    explicit = RegNet(dict(w0=88, wa=26.31, wm=2.25, group_w=48, depth=25, bot_mul=1.0))
    named = RegNet("regnetx_3.2gf")
    assert {k: v.shape for k, v in explicit.state_dict().items()} == {k: v.shape for k, v in named.state_dict().items()}
    with pytest.raises(KeyError, match="regnetx_3.2gf"):
        RegNet("regnetx_3.2GF")
    with pytest.raises(KeyError, match="bot_mul"):
        RegNet(dict(w0=88, wa=26.31, wm=2.25, group_w=48, depth=25))
    with pytest.raises(ValueError, match="wm > 1"):
        RegNet(dict(w0=88, wa=26.31, wm=0.5, group_w=48, depth=25, bot_mul=1.0))
    with pytest.raises(ValueError, match="out_indices"):
        RegNet("regnetx_400mf", out_indices=(4,))


def test_pretrained_regnet_from_a_file_and_open_mmlab_names(tmp_path):
    source = RegNet("regnetx_400mf")
    path = tmp_path / "regnet.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = RegNet("regnetx_400mf", init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    assert model.load_pretrained()
    torch.testing.assert_close(model.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    zoo_name = RegNet("regnetx_400mf", init_cfg=dict(type="Pretrained", checkpoint="open-mmlab://regnetx_400mf"))
    assert not zoo_name.load_pretrained()  # not resolved here: the random init stays
    with pytest.raises(RuntimeError, match="size mismatch"):  # another arch's weights
        RegNet("regnetx_800mf", init_cfg=dict(type="Pretrained", checkpoint=str(path))).load_pretrained()


# ----------------------------------------------------------------------------------------------------- configs

RESNEXT_BACKBONE = dict(
    type="ResNeXt",
    depth=101,
    groups=32,
    base_width=4,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type="BN", requires_grad=True),
    norm_eval=True,
    style="pytorch",
    init_cfg=dict(type="Pretrained", checkpoint="open-mmlab://resnext101_32x4d"),
)
RGB_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
RETINA_TEST_CFG = dict(
    nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
)
# config -> (detector, resolved backbone, img_norm_cfg, (entries, without nbt, parameters), key/shape digest)
CONFIGS = {
    "retinanet/retinanet_x101_32x4d_fpn_1x_coco.py": (
        "RetinaNet",
        RESNEXT_BACKBONE,
        RGB_NORM,
        (660, 556, 56_589_364),
        "3f34d17323a3fa93",
    ),
    "faster_rcnn/faster_rcnn_x101_32x4d_fpn_1x_coco.py": (
        "FasterRCNN",
        RESNEXT_BACKBONE,
        RGB_NORM,
        (654, 550, 60_373_728),
        "4ca9dd7fc4fd9003",
    ),
    "regnet/retinanet_regnetx-3.2GF_fpn_1x_coco.py": (
        "RetinaNet",
        dict(
            type="RegNet",
            arch="regnetx_3.2gf",
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type="BN", requires_grad=True),
            norm_eval=True,
            style="pytorch",
            init_cfg=dict(type="Pretrained", checkpoint="open-mmlab://regnetx_3.2gf"),
        ),
        dict(mean=[103.53, 116.28, 123.675], std=[57.375, 57.12, 58.395], to_rgb=False),
        (516, 436, 25_852_340),
        "eeaa2eb229f2ed7d",
    ),
}


@pytest.mark.parametrize("path", list(CONFIGS))
def test_config_builds_the_zoo_model(path):
    detector, backbone, img_norm_cfg, counts, digest = CONFIGS[path]
    cfg = load_config(str(REPO_ROOT / "configs" / path))
    assert cfg.model.type == detector
    assert cfg.model.backbone.to_dict() == backbone
    assert cfg.img_norm_cfg == img_norm_cfg
    for split in ("val", "test"):
        flip_aug = cfg.data[split].pipeline[1]
        assert flip_aug.type == "MultiScaleFlipAug" and flip_aug.img_scale == (1333, 800) and not flip_aug.flip
        assert [t.type for t in flip_aug.transforms] == [
            "Resize",
            "RandomFlip",
            "Normalize",
            "Pad",
            "ImageToTensor",
            "Collect",
        ]
        assert flip_aug.transforms[2].to_dict() == dict(type="Normalize", **img_norm_cfg)
    assert cfg.data.train.pipeline[4].to_dict() == dict(type="Normalize", **img_norm_cfg)
    if detector == "RetinaNet":
        assert cfg.model.test_cfg.to_dict() == RETINA_TEST_CFG
        assert cfg.model.neck.start_level == 1 and cfg.model.neck.add_extra_convs == "on_input"
    else:
        assert cfg.model.test_cfg.rpn.to_dict() == dict(
            nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0
        )
        assert cfg.model.test_cfg.rcnn.to_dict() == dict(
            score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
        )
    assert cfg.lr_config.step == [8, 11] and cfg.runner.max_epochs == 12
    model = build_detector(cfg.model)
    assert _entries(model) == counts
    assert _digest(model) == digest
    assert list(model.backbone.out_channels) == list(cfg.model.neck.in_channels)


def test_regnet_config_neck_and_optimizer():
    cfg = load_config(str(REPO_ROOT / "configs/regnet/retinanet_regnetx-3.2GF_fpn_1x_coco.py"))
    assert cfg.model.neck.to_dict() == dict(
        type="FPN",
        in_channels=[96, 192, 432, 1008],
        out_channels=256,
        start_level=1,
        add_extra_convs="on_input",
        num_outs=5,
    )
    assert cfg.optimizer == dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=0.00005)
    assert cfg.optimizer_config == dict(grad_clip=dict(max_norm=35, norm_type=2))
    neck = build_detector(cfg.model).neck.state_dict()
    assert [neck[f"lateral_convs.{i}.conv.weight"].shape[1] for i in range(3)] == [192, 432, 1008]
    assert tuple(neck["fpn_convs.3.conv.weight"].shape) == (256, 1008, 3, 3)
