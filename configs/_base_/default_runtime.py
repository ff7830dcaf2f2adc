# Runtime settings of mmdetection 2.28.
checkpoint_config = dict(interval=1)
log_config = dict(interval=50, hooks=[dict(type="TextLoggerHook")])
custom_hooks = [dict(type="NumClassCheckHook")]
dist_params = dict(backend="nccl")
log_level = "INFO"
load_from = None
resume_from = None
workflow = [("train", 1)]
opencv_num_threads = 0
mp_start_method = "fork"
# the learning rate is not rescaled for other batch sizes unless enabled (base: 8 GPUs x 2 images)
auto_scale_lr = dict(enable=False, base_batch_size=16)
