"""The q_config: quantizer settings, calibration size and reconstruction settings of a QDrop run.

A q_config YAML file (e.g. exp/config.yaml) may name a ``root:`` file, relative to itself, whose keys it inherits
(nested mappings merge key by key). ``load_q_config`` resolves that and returns a validated, typed ``QConfig``;
every error names the file, the key and the allowed values.
"""

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Optional, Union

import torch
import yaml

from qdrop.config.errors import QConfigError
from qdrop.config.overrides import ModuleOverride, parse_overrides
from qdrop.quantization import QuantizerConfig
from qdrop.quantization.fake_quant import ROUND_MODES
from qdrop.quantization.fused import default_fast_path

# Storage precision of the reconstruction cache: YAML name -> dtype.
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Autocast precision of the reconstruction forward (recon.amp); null keeps float32.
AMP_DTYPES = {"bfloat16": torch.bfloat16}
REQUIRED_KEYS = ("a_qconfig", "w_qconfig", "calibrate", "recon")
# The axes a quantizer may keep one scale per channel along: weights are (out, in, kh, kw) or (out, in), activations
# (N, C, H, W) whose batch and spatial sizes change from one forward to the next.
WEIGHT_CH_AXES = {-1: "per tensor", 0: "per output channel"}
ACTIVATION_CH_AXES = {-1: "per tensor", 1: "per channel of (N, C, H, W) activations"}


@dataclass(frozen=True)
class ReconConfig:
    """The ``recon`` section: block reconstruction's schedule, cache and speed settings.

    The keys after ``drop_prob`` are optional in YAML files and take the defaults below.
    """

    batch_size: int  # images per step
    scale_lr: float  # Adam's learning rate of the activation (and LSQ weight) scales
    warm_up: float  # fraction of the steps before the rounding regulariser starts
    weight: float  # weight of the rounding regulariser
    iters: int  # steps per unit
    b_range: tuple[float, float]  # the regulariser's exponent: start and end of its linear decay
    keep_gpu: bool  # cache on the compute device (True) or in host memory
    round_mode: str  # AdaRound's rounding function
    drop_prob: float  # probability of keeping an activation quantized; 1 is BRECQ
    cache_dtype: str = "float32"  # storage precision of the cache, a key of CACHE_DTYPES
    round_lr: float = 1e-3  # Adam's learning rate of AdaRound's alpha
    # the fused path of every fake quantizer, for calibration, reconstruction and evaluation alike; the default
    # comes from the environment (QDROP_FAST=0: the plain path)
    fast: bool = field(default_factory=default_fast_path)
    compile: bool = False  # torch.compile the unit during reconstruction
    amp: Optional[str] = None  # autocast dtype of the reconstruction forward (a key of AMP_DTYPES) or None

    @classmethod
    def from_mapping(cls, recon: Union["ReconConfig", Mapping[str, Any]], source: str = "<dict>") -> "ReconConfig":
        """Validate a ``recon`` mapping and fill in the optional keys. Errors name ``source`` and the key."""
        if isinstance(recon, ReconConfig):
            return recon
        keys = recon_keys()
        if not isinstance(recon, Mapping):
            raise QConfigError(f"{source}: recon: expected a mapping with keys {', '.join(keys)}")
        unknown = sorted(set(recon) - set(keys))
        if unknown:
            raise QConfigError(f"{source}: recon.{unknown[0]}: unknown key; allowed keys: {', '.join(keys)}")
        values = {**recon_defaults(), **recon}
        missing = [key for key in keys if key not in values]
        if missing:
            raise QConfigError(f"{source}: recon.{missing[0]}: missing key; required keys: {', '.join(keys)}")
        _check_number(values, "batch_size", source, 1, None, True, integer=True)
        _check_number(values, "iters", source, 0, None, True, integer=True)
        _check_number(values, "scale_lr", source, 0, None, True)
        _check_number(values, "round_lr", source, 0, None, False)
        _check_number(values, "warm_up", source, 0, 1, True)
        _check_number(values, "weight", source, 0, None, True)
        _check_number(values, "drop_prob", source, 0, 1, False)
        b_range = values["b_range"]
        if (
            not isinstance(b_range, (list, tuple))
            or len(b_range) != 2
            or any(isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0 for b in b_range)
        ):
            raise QConfigError(
                f"{source}: recon.b_range: got {b_range!r}; allowed values: [start, end] of two positive numbers"
            )
        for key in ("keep_gpu", "fast", "compile"):
            if not isinstance(values[key], bool):
                raise QConfigError(f"{source}: recon.{key}: got {values[key]!r}; allowed values: true, false")
        _check_choice(values, "round_mode", source, ROUND_MODES)
        _check_choice(values, "cache_dtype", source, tuple(CACHE_DTYPES))
        if values["amp"] is not None:
            _check_choice(values, "amp", source, tuple(AMP_DTYPES), also="null")
        values["b_range"] = tuple(float(b) for b in b_range)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (``b_range`` as a list)."""
        values = {key.name: getattr(self, key.name) for key in fields(self)}
        values["b_range"] = list(self.b_range)
        return values

    @property
    def cache_torch_dtype(self) -> torch.dtype:
        """The torch dtype named by ``cache_dtype``."""
        return CACHE_DTYPES[self.cache_dtype]

    @property
    def amp_torch_dtype(self) -> Optional[torch.dtype]:
        """The torch dtype named by ``amp``, or None for float32."""
        return None if self.amp is None else AMP_DTYPES[self.amp]


def recon_keys() -> tuple[str, ...]:
    """Every key of the ``recon`` section, required ones first."""
    return tuple(key.name for key in fields(ReconConfig))


def recon_defaults() -> dict[str, Any]:
    """The optional keys of the ``recon`` section and their defaults."""
    defaults = {key.name: key.default for key in fields(ReconConfig) if key.default is not MISSING}
    defaults.update(
        {key.name: key.default_factory() for key in fields(ReconConfig) if key.default_factory is not MISSING}
    )
    return defaults


def _check_number(
    values: Mapping[str, Any],
    key: str,
    source: str,
    low: float,
    high: Optional[float],
    include_low: bool,
    integer: bool = False,
) -> None:
    value = values[key]
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise QConfigError(f"{source}: recon.{key}: got {value!r}; allowed values: {kind}")
    above = value >= low if include_low else value > low
    if not above or (high is not None and value > high):
        opening, closing = "[" if include_low else "(", "]" if high is not None else ")"
        span = f"{opening}{low}, {high if high is not None else 'inf'}{closing}"
        raise QConfigError(f"{source}: recon.{key}: got {value!r}; allowed values: {kind} in {span}")


def _check_choice(values: Mapping[str, Any], key: str, source: str, allowed: tuple[str, ...], also: str = "") -> None:
    if values[key] not in allowed:
        choices = ", ".join(allowed + ((also,) if also else ()))
        raise QConfigError(f"{source}: recon.{key}: got {values[key]!r}; allowed values: {choices}")


@dataclass(frozen=True)
class QConfig:
    """A whole q_config: activation and weight quantizers, calibration images, reconstruction, head quantization."""

    a_qconfig: QuantizerConfig
    w_qconfig: QuantizerConfig
    calibrate: int  # calibration images in total, over all ranks
    recon: ReconConfig
    quant_head: bool = False  # quantize the detection heads too
    overrides: tuple[ModuleOverride, ...] = ()  # per-module settings, applied in order (qdrop.config.overrides)

    @classmethod
    def from_mapping(cls, mapping: Union["QConfig", Mapping[str, Any]], source: str = "<dict>") -> "QConfig":
        """Validate a q_config mapping (``root:`` already resolved) and fill in defaults. Errors name ``source``,
        the key and the allowed values. A ``QConfig`` is returned as it is."""
        if isinstance(mapping, QConfig):
            return mapping
        keys = q_config_keys()
        if not isinstance(mapping, Mapping):
            raise QConfigError(f"{source}: expected a mapping with keys {', '.join(keys)}")
        mapping = {key: value for key, value in mapping.items() if key != "root"}
        unknown = sorted(set(mapping) - set(keys))
        if unknown:
            raise QConfigError(f"{source}: {unknown[0]}: unknown key; allowed keys: {', '.join(keys)}, root")
        missing = [key for key in REQUIRED_KEYS if key not in mapping]
        if missing:
            raise QConfigError(f"{source}: {missing[0]}: missing key; required keys: {', '.join(REQUIRED_KEYS)}")
        try:
            a_qconfig = QuantizerConfig.from_mapping(mapping["a_qconfig"], "a_qconfig")
            w_qconfig = QuantizerConfig.from_mapping(mapping["w_qconfig"], "w_qconfig")
        except ValueError as error:
            raise QConfigError(f"{source}: {error}") from None
        _check_ch_axis(a_qconfig, "a_qconfig", ACTIVATION_CH_AXES, source)
        _check_ch_axis(w_qconfig, "w_qconfig", WEIGHT_CH_AXES, source)
        calibrate = mapping["calibrate"]
        if isinstance(calibrate, bool) or not isinstance(calibrate, int) or calibrate < 1:
            raise QConfigError(f"{source}: calibrate: got {calibrate!r}; allowed values: a positive number of images")
        quant_head = mapping.get("quant_head", False)
        if not isinstance(quant_head, bool):
            raise QConfigError(f"{source}: quant_head: got {quant_head!r}; allowed values: true, false")
        recon = ReconConfig.from_mapping(mapping["recon"], source)
        overrides = parse_overrides(mapping.get("overrides"), source)
        return cls(a_qconfig, w_qconfig, calibrate, recon, quant_head, overrides)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: plain dicts, lists and scalars, every optional key written out (``overrides`` only when
        there are some)."""
        values = {
            "a_qconfig": self.a_qconfig.to_dict(),
            "w_qconfig": self.w_qconfig.to_dict(),
            "calibrate": self.calibrate,
            "recon": self.recon.to_dict(),
            "quant_head": self.quant_head,
        }
        if self.overrides:
            values["overrides"] = [entry.to_dict() for entry in self.overrides]
        return values


def _check_ch_axis(cfg: QuantizerConfig, section: str, allowed: dict[int, str], source: str) -> None:
    if cfg.ch_axis not in allowed:
        choices = ", ".join(f"{axis} ({meaning})" for axis, meaning in allowed.items())
        raise QConfigError(f"{source}: {section}.ch_axis: got {cfg.ch_axis!r}; allowed values: {choices}")


def q_config_keys() -> tuple[str, ...]:
    """The top-level keys of a q_config (besides ``root:``)."""
    return tuple(key.name for key in fields(QConfig))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Key-wise merge: nested mappings merge recursively, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _read(path: str, seen: set[str]) -> dict[str, Any]:
    path = os.path.abspath(path)
    if path in seen:
        raise QConfigError(f"{path}: root: inheritance cycle")
    if not os.path.isfile(path):
        raise QConfigError(f"{path}: q_config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:  # a syntax error, or a tag such as !!python/object that plain data never needs
            raise QConfigError(f"{path}: not a YAML file of plain data: {err}") from None
    if not isinstance(data, Mapping):
        raise QConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    root = data.pop("root", None)
    if root is None:
        return data
    if not isinstance(root, str):
        raise QConfigError(f"{path}: root: expected a file path relative to this file, got {root!r}")
    parent = _read(os.path.join(os.path.dirname(path), root), seen | {path})
    return _merge(parent, data)


def load_q_config(path: Union[str, "os.PathLike[str]"]) -> QConfig:
    """Read a q_config YAML file, resolve ``root:`` inheritance (paths relative to the file) and validate it.

    Args:
        path: the YAML file.

    Returns:
        The validated ``QConfig``, optional keys filled in.
    """
    return QConfig.from_mapping(_read(os.fspath(path), set()), source=os.fspath(path))
