"""Registry and builders for the non-module task utilities (anchors, coders, assigners, samplers)."""

from mmengine.registry import Registry

TASK_UTILS = Registry("task utils", scope="qdrop_det")
PRIOR_GENERATORS = ANCHOR_GENERATORS = BBOX_CODERS = BBOX_ASSIGNERS = BBOX_SAMPLERS = TASK_UTILS


def build_prior_generator(cfg: dict):
    return TASK_UTILS.build(dict(cfg))


build_anchor_generator = build_prior_generator


def build_bbox_coder(cfg: dict):
    return TASK_UTILS.build(dict(cfg))


def build_assigner(cfg: dict):
    return TASK_UTILS.build(dict(cfg))


def build_sampler(cfg: dict, **default_args):
    return TASK_UTILS.build(dict(cfg), default_args=default_args or None)
