"""The package logger 'mmdet': console on every rank (errors only off rank 0), file on rank 0."""

import logging
import os.path as osp
from typing import Optional, Union

from .dist_utils import get_dist_info

LOGGER_NAME = "mmdet"
_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def get_root_logger(log_file: Optional[str] = None, log_level: Union[str, int] = "INFO") -> logging.Logger:
    """Return the 'mmdet' logger, adding a console handler once and a file handler per new `log_file`."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = False
    rank, _ = get_dist_info()
    formatter = logging.Formatter(_FORMAT)
    if not any(type(h) is logging.StreamHandler for h in logger.handlers):
        console = logging.StreamHandler()
        console.setFormatter(formatter)
        logger.addHandler(console)
    if log_file is not None and rank == 0:
        path = osp.abspath(log_file)
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
            file_handler = logging.FileHandler(path, mode="a")
            file_handler.setFormatter(formatter)
            logger.addHandler(file_handler)
    logger.setLevel(log_level if rank == 0 else logging.ERROR)
    return logger
