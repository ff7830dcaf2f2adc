"""Per-module quantizer settings: the q_config's optional `overrides:` list.

Each entry names modules with an fnmatch-style glob over qualified module names (`backbone.layer4.*`) and the
settings it changes there: any `w_qconfig` / `a_qconfig` field, or `quantize: False` to keep the modules float.
An entry applies to a module when its glob matches the module's name or the name of a module containing it, so
`backbone.layer1.0` covers the whole block. Entries apply in order; a later entry wins.
"""

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from fnmatch import fnmatchcase
from typing import Any, Optional

from qdrop.config.errors import QConfigError
from qdrop.quantization import QuantizerConfig

ENTRY_KEYS = ("modules", "w_qconfig", "a_qconfig", "quantize")


@dataclass(frozen=True)
class ModuleOverride:
    """One entry of `overrides:`.

    Attributes:
        modules: glob over qualified module names.
        w_qconfig: the weight quantizer fields it sets, as (key, value) pairs.
        a_qconfig: the activation quantizer fields it sets, as (key, value) pairs.
        quantize: False keeps the modules float; None leaves that as it is.
    """

    modules: str
    w_qconfig: tuple[tuple[str, Any], ...] = ()
    a_qconfig: tuple[tuple[str, Any], ...] = ()
    quantize: Optional[bool] = None

    @classmethod
    def from_mapping(cls, entry: Any, where: str) -> "ModuleOverride":
        """Validate one entry; errors name `where` (e.g. `exp/x.yaml: overrides[2]`), the key and the allowed
        values."""
        if isinstance(entry, ModuleOverride):
            return entry
        if not isinstance(entry, Mapping):
            raise QConfigError(f"{where}: expected a mapping with keys {', '.join(ENTRY_KEYS)}, got {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise QConfigError(f"{where}.{unknown[0]}: unknown key; allowed keys: {', '.join(ENTRY_KEYS)}")
        modules = entry.get("modules")
        if not isinstance(modules, str) or not modules:
            raise QConfigError(
                f'{where}.modules: got {modules!r}; allowed values: a glob over module names, e.g. "backbone.layer4.*"'
            )
        quantize = entry.get("quantize")
        if quantize is not None and not isinstance(quantize, bool):
            raise QConfigError(f"{where}.quantize: got {quantize!r}; allowed values: true, false")
        settings = {key: _fields(entry.get(key, {}), f"{where}.{key}") for key in ("w_qconfig", "a_qconfig")}
        if not settings["w_qconfig"] and not settings["a_qconfig"] and quantize is None:
            raise QConfigError(f"{where}: changes nothing; give w_qconfig, a_qconfig and/or quantize")
        return cls(modules, settings["w_qconfig"], settings["a_qconfig"], quantize)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, with only the keys the entry sets."""
        entry: dict[str, Any] = {"modules": self.modules}
        for key in ("w_qconfig", "a_qconfig"):
            if getattr(self, key):
                entry[key] = dict(getattr(self, key))
        if self.quantize is not None:
            entry["quantize"] = self.quantize
        return entry

    def matches(self, name: str) -> bool:
        """Whether the entry applies to module `name`: the glob matches it or a module containing it."""
        parts = name.split(".")
        return any(fnmatchcase(".".join(parts[:end]), self.modules) for end in range(len(parts), 0, -1))


def _fields(settings: Any, where: str) -> tuple[tuple[str, Any], ...]:
    """The (key, value) pairs of a partial quantizer section; each value is checked on a complete section."""
    if not isinstance(settings, Mapping):
        raise QConfigError(f"{where}: expected a mapping of quantizer fields, got {settings!r}")
    keys = [field.name for field in fields(QuantizerConfig)]
    unknown = sorted(set(settings) - set(keys))
    if unknown:
        raise QConfigError(f"{where}.{unknown[0]}: unknown key; allowed keys: {', '.join(keys)}")
    probe = {
        "quantizer": "FixedFakeQuantize",
        "observer": "MinMaxObserver",
        "bit": 8,
        "symmetric": False,
        "ch_axis": -1,
    }
    QuantizerConfig.from_mapping({**probe, **settings}, where)
    return tuple((key, settings[key]) for key in keys if key in settings)


def parse_overrides(entries: Any, source: str) -> tuple[ModuleOverride, ...]:
    """Validate the `overrides:` list of a q_config read from `source`."""
    if entries is None:
        return ()
    if not isinstance(entries, (list, tuple)):
        raise QConfigError(
            f"{source}: overrides: expected a list of entries {{modules: glob, w_qconfig: {{...}}, "
            f"a_qconfig: {{...}}, quantize: false}}, got {entries!r}"
        )
    return tuple(
        ModuleOverride.from_mapping(entry, f"{source}: overrides[{index}]") for index, entry in enumerate(entries)
    )


@dataclass(frozen=True)
class ModuleSettings:
    """The effective settings of one module after the overrides."""

    w_cfg: QuantizerConfig
    a_cfg: QuantizerConfig
    quantize: bool = True


class SettingsResolver:
    """The final settings of every module of one model: the q_config's sections with the override entries that apply
    to the module applied in order. Quantizers are built once, from these settings.

    Args:
        base: the q_config's `w_qconfig` and `a_qconfig`.
        entries: the override entries, in order.
        checked_from: the first of the user's entries; those before it are the project's defaults (the first-layer
            entry), which need not match a module.
    """

    def __init__(self, base: ModuleSettings, entries: Sequence[ModuleOverride], checked_from: int = 0):
        self.base = base
        self.entries = tuple(entries)
        self.checked_from = checked_from

    def settings(self, name: str) -> ModuleSettings:
        """The settings of module `name`: `base` with every entry that applies to it applied in order."""
        settings = self.base
        for entry in self.entries:
            if not entry.matches(name):
                continue
            settings = ModuleSettings(
                replace(settings.w_cfg, **dict(entry.w_qconfig)),
                replace(settings.a_cfg, **dict(entry.a_qconfig)),
                settings.quantize if entry.quantize is None else entry.quantize,
            )
        return settings

    def check_every_entry_matches(self, names: Iterable[str]) -> None:
        """Raise QConfigError for the first of the user's entries that applies to none of `names` (the quantizable
        modules), naming its glob and the nearest module names."""
        names = list(names)
        candidates = sorted(
            {".".join(name.split(".")[:end]) for name in names for end in range(1, name.count(".") + 2)}
        )
        for index, entry in enumerate(self.entries[self.checked_from :]):
            if not any(entry.matches(name) for name in names):
                nearest = difflib.get_close_matches(entry.modules, candidates, n=3, cutoff=0.0)
                raise QConfigError(
                    f"q_config overrides[{index}].modules: {entry.modules!r} matches no quantizable module; "
                    f"nearest module names: {', '.join(nearest)}"
                )
