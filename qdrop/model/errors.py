"""The error of a detector that cannot be quantized as it is."""

from mmdet.utils.errors import UserError


class PlacementError(UserError, ValueError):
    """A detector whose parts cannot be quantized as they are (BatchNorm not folded, an unsupported layer)."""
