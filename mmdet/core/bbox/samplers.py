"""Samplers: choose positive and negative candidates from an AssignResult."""

from typing import Optional

import torch

from ..builder import TASK_UTILS
from .assigners import AssignResult


class SamplingResult:
    """Sampled positive/negative indices (sorted, unique) and the boxes and gt matches they refer to."""

    def __init__(
        self,
        pos_inds: torch.Tensor,
        neg_inds: torch.Tensor,
        bboxes: torch.Tensor,
        gt_bboxes: torch.Tensor,
        assign_result: AssignResult,
        gt_flags: torch.Tensor,
    ):
        self.pos_inds = pos_inds
        self.neg_inds = neg_inds
        self.pos_bboxes = bboxes[pos_inds]
        self.neg_bboxes = bboxes[neg_inds]
        self.pos_is_gt = gt_flags[pos_inds]
        self.num_gts = gt_bboxes.shape[0]
        self.pos_assigned_gt_inds = assign_result.gt_inds[pos_inds] - 1
        if gt_bboxes.numel() == 0:
            self.pos_gt_bboxes = gt_bboxes.new_zeros((0, 4))
        else:
            self.pos_gt_bboxes = gt_bboxes.reshape(-1, 4)[self.pos_assigned_gt_inds]
        self.pos_gt_labels = None if assign_result.labels is None else assign_result.labels[pos_inds]

    @property
    def bboxes(self) -> torch.Tensor:
        """Positive boxes first, then negatives."""
        return torch.cat([self.pos_bboxes, self.neg_bboxes])


def _indices_where(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask, as_tuple=False).flatten()


@TASK_UTILS.register_module()
class PseudoSampler:
    """Takes every assigned candidate: positives gt_inds > 0, negatives gt_inds == 0."""

    def sample(
        self,
        assign_result: AssignResult,
        bboxes: torch.Tensor,
        gt_bboxes: torch.Tensor,
        gt_labels: Optional[torch.Tensor] = None,
    ) -> SamplingResult:
        pos_inds = _indices_where(assign_result.gt_inds > 0).unique()
        neg_inds = _indices_where(assign_result.gt_inds == 0).unique()
        gt_flags = bboxes.new_zeros(bboxes.shape[0], dtype=torch.uint8)
        return SamplingResult(pos_inds, neg_inds, bboxes, gt_bboxes, assign_result, gt_flags)


@TASK_UTILS.register_module()
class RandomSampler:
    """Uniform random subsets: at most `num * pos_fraction` positives, negatives fill up to `num`."""

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1, add_gt_as_proposals: bool = True):
        if num <= 0 or not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"RandomSampler: need num > 0 and 0 <= pos_fraction <= 1, got {num}, {pos_fraction}")
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals

    @staticmethod
    def random_choice(gallery: torch.Tensor, num: int) -> torch.Tensor:
        """`num` distinct elements of `gallery`, uniformly at random.

        The permutation is drawn from the CPU generator whatever the device, so a seed gives the same samples on
        CPU and GPU.
        """
        if num > gallery.numel():
            raise ValueError(f"RandomSampler: cannot draw {num} of {gallery.numel()} elements")
        perm = torch.randperm(gallery.numel())[:num].to(gallery.device)
        return gallery[perm]

    def _sample(self, candidates: torch.Tensor, num_expected: int) -> torch.Tensor:
        if candidates.numel() <= num_expected:
            return candidates
        return self.random_choice(candidates, num_expected)

    def sample(
        self,
        assign_result: AssignResult,
        bboxes: torch.Tensor,
        gt_bboxes: torch.Tensor,
        gt_labels: Optional[torch.Tensor] = None,
    ) -> SamplingResult:
        bboxes = bboxes[:, :4]
        gt_flags = bboxes.new_zeros(bboxes.shape[0], dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            if gt_labels is None:
                raise ValueError("RandomSampler: add_gt_as_proposals=True needs gt_labels")
            bboxes = torch.cat([gt_bboxes, bboxes], dim=0)
            assign_result.add_gt_(gt_labels)
            gt_flags = torch.cat([gt_flags.new_ones(gt_bboxes.shape[0]), gt_flags])

        num_expected_pos = int(self.num * self.pos_fraction)
        pos_inds = self._sample(_indices_where(assign_result.gt_inds > 0), num_expected_pos).unique()
        num_expected_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            num_expected_neg = min(num_expected_neg, int(self.neg_pos_ub * max(1, pos_inds.numel())))
        neg_inds = self._sample(_indices_where(assign_result.gt_inds == 0), num_expected_neg).unique()
        return SamplingResult(pos_inds, neg_inds, bboxes, gt_bboxes, assign_result, gt_flags)
