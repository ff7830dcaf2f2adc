from .anchor_generator import AnchorGenerator
from .point_generator import MlvlPointGenerator

__all__ = ["AnchorGenerator", "MlvlPointGenerator"]
