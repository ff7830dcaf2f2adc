# RetinaNet with a ResNeXt-101 32x4d backbone (mmdetection 2.28 model zoo: retinanet_x101_32x4d_fpn_1x_coco).
_base_ = "./retinanet_r50_fpn_1x_coco.py"
model = dict(
    backbone=dict(
        type="ResNeXt",
        depth=101,
        groups=32,
        base_width=4,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type="BN", requires_grad=True),
        style="pytorch",
        init_cfg=dict(type="Pretrained", checkpoint="open-mmlab://resnext101_32x4d"),
    )
)
