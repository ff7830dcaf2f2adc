# A narrow FCOS (ResNet-18 at a quarter width, 32-channel FPN, GroupNorm head) trained from scratch on the synthetic
# shapes set on a CPU: `make data`, then tools/train.py with this file. Head options of mmdetection's
# fcos_center-normbbox-centeronreg-giou config (centre sampling, stride-normalised distances, centerness on the
# regression tower, GIoU loss, biased tower convs).
_base_ = ["./_base_/synthetic_coco.py"]

model = dict(
    type="FCOS",
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
        add_extra_convs="on_output",
        num_outs=5,
        relu_before_extra_convs=True,
    ),
    bbox_head=dict(
        type="FCOSHead",
        num_classes=6,
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        strides=[8, 16, 32, 64, 128],
        # COCO's ranges halved: objects here are 8-255 px (median 57) on images of about 384 x 256
        regress_ranges=((-1, 32), (32, 64), (64, 128), (128, 256), (256, 1e8)),
        norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        conv_bias=True,
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type="GIoULoss", loss_weight=1.0),
        loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
    ),
    train_cfg=dict(),  # FCOS assigns points by regress ranges: no assigner or sampler
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6), max_per_img=100
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
