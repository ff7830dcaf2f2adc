from ..builder import MODELS
from .two_stage import TwoStageDetector


@MODELS.register_module()
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN (He et al., 2017): Faster R-CNN plus an FCN mask branch in the RoI head (`mask_roi_extractor`,
    `mask_head`). Test results per image are `(bbox_results, segm_results)`; training needs `gt_masks`."""

    @property
    def with_mask(self) -> bool:
        return self.roi_head is not None and self.roi_head.with_mask
