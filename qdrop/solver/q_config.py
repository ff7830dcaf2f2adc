"""Loading and validation of q_config YAML files (exp/config.yaml and files inheriting from it via ``root:``)."""
import os
from typing import Any, Dict, Mapping, Optional, Set

import yaml

from qdrop.quantization.fake_quant import ROUND_MODES
from qdrop.quantization.quantized_module import check_qconfig

TOP_LEVEL_KEYS = ('a_qconfig', 'w_qconfig', 'calibrate', 'recon', 'quant_head')
RECON_KEYS = ('batch_size', 'scale_lr', 'warm_up', 'weight', 'iters', 'b_range', 'keep_gpu', 'round_mode',
              'drop_prob', 'cache_dtype', 'round_lr')
# Optional recon keys (not in the seed's files): the cache precision and Adam's lr for AdaRound's alpha (BRECQ/QDrop: 1e-3).
RECON_DEFAULTS = {'cache_dtype': 'float32', 'round_lr': 1e-3}
CACHE_DTYPES = ('float32', 'float16', 'bfloat16')
REQUIRED_KEYS = ('a_qconfig', 'w_qconfig', 'calibrate', 'recon')


def _merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """Key-wise merge: nested mappings merge recursively, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _read(path: str, seen: Set[str]) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if path in seen:
        raise ValueError(f'{path}: root: inheritance cycle')
    if not os.path.isfile(path):
        raise ValueError(f'{path}: q_config file not found')
    with open(path, 'r', encoding='utf-8') as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f'{path}: expected a mapping at the top level, got {type(data).__name__}')
    data = dict(data)
    root = data.pop('root', None)
    if root is None:
        return data
    if not isinstance(root, str):
        raise ValueError(f'{path}: root: expected a file path relative to this file, got {root!r}')
    parent = _read(os.path.join(os.path.dirname(path), root), seen | {path})
    return _merge(parent, data)


def load_q_config(path: str) -> Dict[str, Any]:
    """Read a q_config YAML file, resolve ``root:`` inheritance (paths relative to the file), validate it."""
    return validate_q_config(_read(os.fspath(path), set()), source=os.fspath(path))


def _number(recon: Mapping[str, Any], key: str, source: str, low: float, high: Optional[float],
            include_low: bool, integer: bool = False) -> None:
    value = recon[key]
    kind = 'an integer' if integer else 'a number'
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f'{source}: recon.{key}: got {value!r}; allowed values: {kind}')
    above = value >= low if include_low else value > low
    if not above or (high is not None and value > high):
        opening, closing = '[' if include_low else '(', ']' if high is not None else ')'
        span = f"{opening}{low}, {high if high is not None else 'inf'}{closing}"
        raise ValueError(f'{source}: recon.{key}: got {value!r}; allowed values: {kind} in {span}')


def _check_recon(recon: Any, source: str) -> Dict[str, Any]:
    if not isinstance(recon, Mapping):
        raise ValueError(f'{source}: recon: expected a mapping with keys {", ".join(RECON_KEYS)}')
    unknown = sorted(set(recon) - set(RECON_KEYS))
    if unknown:
        raise ValueError(f'{source}: recon.{unknown[0]}: unknown key; allowed keys: {", ".join(RECON_KEYS)}')
    recon = {**RECON_DEFAULTS, **recon}
    missing = [k for k in RECON_KEYS if k not in recon]
    if missing:
        raise ValueError(f'{source}: recon.{missing[0]}: missing key; required keys: {", ".join(RECON_KEYS)}')
    _number(recon, 'batch_size', source, 1, None, True, integer=True)
    _number(recon, 'iters', source, 0, None, True, integer=True)
    _number(recon, 'scale_lr', source, 0, None, True)
    _number(recon, 'round_lr', source, 0, None, False)
    _number(recon, 'warm_up', source, 0, 1, True)
    _number(recon, 'weight', source, 0, None, True)
    _number(recon, 'drop_prob', source, 0, 1, False)
    b_range = recon['b_range']
    if (not isinstance(b_range, (list, tuple)) or len(b_range) != 2
            or any(isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0 for b in b_range)):
        raise ValueError(f'{source}: recon.b_range: got {b_range!r}; '
                         'allowed values: [start, end] of two positive numbers')
    if not isinstance(recon['keep_gpu'], bool):
        raise ValueError(f"{source}: recon.keep_gpu: got {recon['keep_gpu']!r}; allowed values: true, false")
    if recon['round_mode'] not in ROUND_MODES:
        raise ValueError(f"{source}: recon.round_mode: got {recon['round_mode']!r}; "
                         f"allowed values: {', '.join(ROUND_MODES)}")
    if recon['cache_dtype'] not in CACHE_DTYPES:
        raise ValueError(f"{source}: recon.cache_dtype: got {recon['cache_dtype']!r}; "
                         f"allowed values: {', '.join(CACHE_DTYPES)}")
    return recon


def validate_q_config(config: Mapping[str, Any], source: str = '<dict>') -> Dict[str, Any]:
    """Check a resolved q_config mapping; return it with defaults filled in. Errors name ``source`` and the key."""
    if not isinstance(config, Mapping):
        raise ValueError(f'{source}: expected a mapping with keys {", ".join(TOP_LEVEL_KEYS)}')
    config = {k: v for k, v in config.items() if k != 'root'}
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f'{source}: {unknown[0]}: unknown key; allowed keys: {", ".join(TOP_LEVEL_KEYS)}, root')
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f'{source}: {missing[0]}: missing key; required keys: {", ".join(REQUIRED_KEYS)}')
    for key in ('a_qconfig', 'w_qconfig'):
        try:
            check_qconfig(config[key], key)
        except ValueError as error:
            raise ValueError(f'{source}: {error}') from None
    calibrate = config['calibrate']
    if isinstance(calibrate, bool) or not isinstance(calibrate, int) or calibrate < 1:
        raise ValueError(f'{source}: calibrate: got {calibrate!r}; allowed values: a positive number of images')
    if 'quant_head' in config and not isinstance(config['quant_head'], bool):
        raise ValueError(f"{source}: quant_head: got {config['quant_head']!r}; allowed values: true, false")
    result = dict(config)
    result['a_qconfig'], result['w_qconfig'] = dict(config['a_qconfig']), dict(config['w_qconfig'])
    result['recon'] = _check_recon(config['recon'], source)
    result.setdefault('quant_head', False)
    return result
