# Shared file: the models stream added the checkpoint / fuse_conv_bn exports; the data stream extends it.
from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .config import load_config, update_data_root
from .dist_utils import barrier, get_dist_info, init_dist, is_main_process
from .fuse_conv_bn import fuse_conv_bn
from .logger import get_root_logger
from .misc import to_device

__all__ = [
    "CheckpointMismatchError", "load_checkpoint", "save_checkpoint", "fuse_conv_bn",
    "load_config", "update_data_root", "barrier", "get_dist_info", "init_dist", "is_main_process",
    "get_root_logger", "to_device",
]
