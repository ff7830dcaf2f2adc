from .checkpoint import (
    ALLOW_PICKLE_ENV,
    CheckpointFileError,
    CheckpointMismatchError,
    NonFiniteWeightsError,
    UnsafeCheckpointError,
    check_finite,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .config import UnknownConfigKeyError, apply_cfg_options, load_config, update_data_root
from .config_file import ConfigFileError, ConfigSyntaxError, UnsafeConfigError, read_config_file
from .device import default_device
from .dist_utils import all_reduce_mean_, barrier, get_dist_info, init_dist, is_main_process
from .errors import ConfigKeyError, ConfigValueError, InputFileNotFoundError, UserError
from .fuse_conv_bn import fuse_conv_bn
from .logger import get_root_logger
from .misc import to_device

__all__ = [
    "ALLOW_PICKLE_ENV",
    "CheckpointFileError",
    "CheckpointMismatchError",
    "NonFiniteWeightsError",
    "UnsafeCheckpointError",
    "check_finite",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "fuse_conv_bn",
    "ConfigFileError",
    "ConfigSyntaxError",
    "UnsafeConfigError",
    "read_config_file",
    "UnknownConfigKeyError",
    "apply_cfg_options",
    "load_config",
    "update_data_root",
    "default_device",
    "ConfigKeyError",
    "ConfigValueError",
    "InputFileNotFoundError",
    "UserError",
    "all_reduce_mean_",
    "barrier",
    "get_dist_info",
    "init_dist",
    "is_main_process",
    "get_root_logger",
    "to_device",
]
