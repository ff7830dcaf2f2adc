"""The q_config: one YAML file (exp/config.yaml) read into one typed, validated object, with the per-module
settings of `overrides:` resolved for every module."""

from .errors import QConfigError
from .overrides import ModuleOverride, ModuleSettings, SettingsResolver
from .q_config import QConfig, ReconConfig, load_q_config

__all__ = [
    "ModuleOverride",
    "ModuleSettings",
    "QConfig",
    "QConfigError",
    "ReconConfig",
    "SettingsResolver",
    "load_q_config",
]
