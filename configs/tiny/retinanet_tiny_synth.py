# A narrow RetinaNet (ResNet-18 at a quarter width, 32-channel FPN and head) trained from scratch on the
# synthetic shapes set in minutes on a CPU: `make data`, then tools/train.py with this file.
_base_ = ["./_base_/synthetic_coco.py"]

model = dict(
    type="RetinaNet",
    backbone=dict(
        type="ResNet",
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=False,  # trained from scratch: BN statistics must be learned
        style="pytorch",
        init_cfg=None,
    ),
    neck=dict(
        type="FPN",
        in_channels=[16, 32, 64, 128],
        out_channels=32,
        start_level=1,
        add_extra_convs="on_input",
        num_outs=5,
    ),
    bbox_head=dict(
        type="RetinaHead",
        num_classes=6,
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        # GroupNorm in the shared head towers, as in mmdetection's from-scratch and GN configs: without it the
        # head learns several times slower from random initialisation.
        norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
        anchor_generator=dict(
            type="AnchorGenerator",
            octave_base_scale=2,  # COCO uses 4; objects here start at 8 px, so the smallest anchor is 16 px
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128],
        ),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0),
    ),
    train_cfg=dict(
        assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        allowed_border=-1,
        pos_weight=-1,
        debug=False,
    ),
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100
    ),
)

# From scratch on a few thousand images, AdamW gets much further than SGD in the same few epochs.
optimizer = dict(type="AdamW", lr=0.002, weight_decay=0.05)
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(policy="step", warmup="linear", warmup_iters=300, warmup_ratio=0.001, step=[9])
runner = dict(type="EpochBasedRunner", max_epochs=11)
checkpoint_config = dict(interval=1, max_keep_ckpts=3)
log_config = dict(interval=50, hooks=[dict(type="TextLoggerHook")])
dist_params = dict(backend="nccl")
log_level = "INFO"
load_from = None
resume_from = None
workflow = [("train", 1)]
