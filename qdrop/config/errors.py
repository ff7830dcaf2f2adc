"""The error of a q_config that cannot be used."""

from mmdet.utils.errors import UserError


class QConfigError(UserError, ValueError):
    """A q_config key, class name or value is unknown or out of range; the message names the file, the key and the
    allowed values."""
