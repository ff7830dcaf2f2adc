"""AnchorGenerator and DeltaXYWHBBoxCoder."""

import math

import pytest
import torch

from mmdet.core import AnchorGenerator, DeltaXYWHBBoxCoder, build_anchor_generator, build_bbox_coder

RPN_ANCHORS = dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
RETINA_ANCHORS = dict(
    type="AnchorGenerator",
    octave_base_scale=4,
    scales_per_octave=3,
    ratios=[0.5, 1.0, 2.0],
    strides=[8, 16, 32, 64, 128],
)


def test_rpn_anchors_first_values_order_and_count():
    gen = build_anchor_generator(RPN_ANCHORS)
    sizes = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    anchors = gen.grid_priors(sizes)
    s = 22.627417  # 32 * sqrt(2) / 2
    expected_base = torch.tensor([[-s, -s / 2, s, s / 2], [-16, -16, 16, 16], [-s / 2, -s, s / 2, s]])
    torch.testing.assert_close(anchors[0][:3], expected_base)
    # Next location is x + 1 (row-major, anchors innermost): shifted by the stride in x only.
    torch.testing.assert_close(anchors[0][3:6], expected_base + torch.tensor([4.0, 0, 4.0, 0]))
    # First anchor of row 1 sits at y = stride.
    torch.testing.assert_close(anchors[0][272 * 3], expected_base[0] + torch.tensor([0, 4.0, 0, 4.0]))
    assert sum(a.shape[0] for a in anchors) == 3 * (200 * 272 + 100 * 136 + 50 * 68 + 25 * 34 + 13 * 17)
    # Sizes scale with the stride: ratio-1 anchor side is 8 * stride.
    for level, stride in enumerate([4, 8, 16, 32, 64]):
        side = anchors[level][1, 2] - anchors[level][1, 0]
        assert side.item() == 8 * stride
    assert anchors[0].dtype == torch.float32


def test_retina_base_anchors_are_unrounded_and_ratio_major():
    gen = build_anchor_generator(RETINA_ANCHORS)
    torch.testing.assert_close(gen.scales, torch.tensor([4.0, 5.0396842, 6.3496042]))
    half = torch.tensor(
        [
            [22.6274, 11.3137],
            [28.5088, 14.2544],
            [35.9188, 17.9594],
            [16.0, 16.0],
            [20.1587, 20.1587],
            [25.3984, 25.3984],
            [11.3137, 22.6274],
            [14.2544, 28.5088],
            [17.9594, 35.9188],
        ]
    )
    base = gen.base_anchors[0]
    torch.testing.assert_close(base, torch.cat([-half, half], dim=1), atol=1e-4, rtol=0)
    torch.testing.assert_close(gen.base_anchors[2], base * 4)
    assert gen.num_base_anchors == [9] * 5
    anchors = gen.grid_priors([(4, 5)] * 5)
    assert all(a.shape == (4 * 5 * 9, 4) for a in anchors)


def test_valid_flags_follow_the_image_pad_shape():
    gen = AnchorGenerator(strides=[16], ratios=[1.0], scales=[2])
    # Batch feature map 3 x 5 (batch padded to 48 x 80) but this image is padded to 40 x 50 only.
    flags = gen.valid_flags([(3, 5)], (40, 50, 3))[0].view(3, 5)
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[:3, :4] = True  # ceil(40 / 16) = 3 rows, ceil(50 / 16) = 4 columns
    assert torch.equal(flags, expected)


def test_anchor_generator_rejects_bad_config():
    with pytest.raises(ValueError, match="scales"):
        AnchorGenerator(strides=[8], ratios=[1.0])
    with pytest.raises(ValueError, match="feature maps"):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1]).grid_priors([(2, 2)])


def test_decode_formula_clamps_only_dw_dh_and_clips_to_img_shape():
    coder = build_bbox_coder(dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4))
    anchors = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size (20, 40)
    deltas = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])
    out = coder.decode(anchors, deltas)
    torch.testing.assert_close(out, torch.tensor([[10.0, 10.0, 50.0, 50.0]]))

    # dw beyond ln(1000/16) is clamped; a huge dx is not.
    max_ratio = abs(math.log(16 / 1000))
    out = coder.decode(anchors, torch.tensor([[3.0, 0.0, 10.0, -10.0]]))
    gw, gh = 20 * math.exp(max_ratio), 40 * math.exp(-max_ratio)
    expected = torch.tensor([[80 - gw / 2, 40 - gh / 2, 80 + gw / 2, 40 + gh / 2]])
    torch.testing.assert_close(out, expected)

    # Clipping uses (h, w) of the unpadded image: x to [0, w], y to [0, h].
    out = coder.decode(anchors, torch.tensor([[0.0, 0.0, 3.0, 3.0]]), max_shape=(50, 45, 3))
    assert out[0].tolist() == [0.0, 0.0, 45.0, 50.0]


def test_decode_class_specific_layout_and_stds():
    coder = DeltaXYWHBBoxCoder(target_stds=[0.1, 0.1, 0.2, 0.2])
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 25.0, 45.0]])
    deltas = torch.randn(2, 3 * 4)
    out = coder.decode(rois, deltas, max_shape=(100, 100))
    assert out.shape == (2, 12)
    for c in range(3):
        torch.testing.assert_close(
            out[:, 4 * c : 4 * c + 4], coder.decode(rois, deltas[:, 4 * c : 4 * c + 4], max_shape=(100, 100))
        )
    # A zero delta reproduces the RoI whatever the stds.
    torch.testing.assert_close(coder.decode(rois, torch.zeros(2, 4)), rois)


def test_encode_decode_round_trip():
    coder = DeltaXYWHBBoxCoder(target_stds=[0.1, 0.1, 0.2, 0.2])
    xy = torch.rand(50, 2) * 100
    wh = torch.rand(50, 2) * 50 + 1
    anchors = torch.cat([xy, xy + wh], dim=1)
    gts = anchors + torch.randn(50, 4) * 3
    gts[:, 2:] = torch.maximum(gts[:, 2:], gts[:, :2] + 1)
    deltas = coder.encode(anchors, gts)
    # encode: (g - p) / p_size, log ratios, then divided by the stds
    pw = anchors[:, 2] - anchors[:, 0]
    gx = (gts[:, 0] + gts[:, 2]) * 0.5
    px = (anchors[:, 0] + anchors[:, 2]) * 0.5
    torch.testing.assert_close(deltas[:, 0], (gx - px) / pw / 0.1)
    torch.testing.assert_close(coder.decode(anchors, deltas), gts, atol=1e-3, rtol=1e-5)
