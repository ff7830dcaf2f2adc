"""Config files read as data: mmdetection's Python config format evaluated without running it.

A config file is parsed into a syntax tree and evaluated node by node by a small interpreter that knows only what
configs are made of: assignments to names, literals, ``dict(...)`` and the other constructors and pure functions
of :data:`SAFE_CALLS`, arithmetic, comparisons, subscripts, f-strings, comprehensions, and ``name.update(...)`` on a
dict. Imports, attribute access, function and class definitions, lambdas, loops and every other call are refused
with the file, the line and the construct named, so that no file the project reads can run code. Results are
bounded (:data:`MAX_ITEMS`) so that a file cannot make the reader allocate without limit either.

Inheritance follows mmdetection's rules: ``_base_`` (one path or a list, relative to the file; ``.py``, ``.json``,
``.yaml``) is read first, keys defined by two bases are an error, the file's dicts are merged into the bases' dicts
key by key, and a dict with ``_delete_=True`` replaces the base's instead. Top-level names starting with ``__`` are
not config entries. JSON and YAML files are read with ``json`` and ``yaml.safe_load``.
"""

import ast
import json
import operator
import os.path as osp
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from mmdet.utils.errors import UserError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
MAX_ITEMS = 1_000_000
MAX_POWER_EXPONENT = 256


class ConfigSyntaxError(UserError, SyntaxError):
    """The config file or one of its base files does not parse; the message names the file and the line."""


class UnsafeConfigError(UserError, ValueError):
    """A config file uses a construct that the data reader does not evaluate (an import, an attribute, a call of
    anything but :data:`SAFE_CALLS`...); the message names the file, the line and the construct."""


class ConfigFileError(UserError, ValueError):
    """A config file is well formed but cannot be read as a config: an undefined name, a failing expression, a
    base file that is missing or defines a key twice, a merge of a dict into a non-dict."""


def _bounded_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_ITEMS:
        raise ValueError(f"range of {len(values)} elements (at most {MAX_ITEMS})")
    return values


SAFE_CALLS: dict[str, Callable[..., Any]] = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "range": _bounded_range,
    "enumerate": enumerate,
    "zip": zip,
    "reversed": reversed,
    "sorted": sorted,
    "len": len,
    "min": min,
    "max": max,
    "sum": sum,
    "abs": abs,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
}
"""The functions a config may call, by name: constructors and pure functions of plain values."""

_SAFE_METHODS = {
    str: {"join", "replace", "split", "strip", "lower", "upper", "startswith", "endswith"},
    dict: {"get", "copy", "keys", "values", "items"},
    list: {"copy", "index", "count"},
    tuple: {"index", "count"},
}

_BINARY_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
    ast.Invert: operator.invert,
}
_COMPARE_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_CONVERSIONS = {ord("s"): str, ord("r"): repr, ord("a"): ascii}


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_ITEMS:
        raise ValueError(f"a value of {len(value)} elements (at most {MAX_ITEMS})")
    return value


def _binary(op: ast.operator, left: Any, right: Any) -> Any:
    if isinstance(op, ast.Pow) and isinstance(right, int) and abs(right) > MAX_POWER_EXPONENT:
        raise ValueError(f"exponent {right} (at most {MAX_POWER_EXPONENT})")
    if isinstance(op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_ITEMS:
                raise ValueError(f"a repeated value of {len(seq) * count} elements (at most {MAX_ITEMS})")
    return _check_size(_BINARY_OPS[type(op)](left, right))


class _Interpreter:
    """Evaluates one config file's syntax tree into its top-level names."""

    def __init__(self, path: str):
        self.path = path

    def refuse(self, node: ast.AST, what: str) -> UnsafeConfigError:
        return UnsafeConfigError(
            f"config file {self.path}, line {getattr(node, 'lineno', '?')}: {what} is not allowed; config files are "
            "read as data (assignments of literals, dict(...), arithmetic, comprehensions and the functions "
            f"{', '.join(SAFE_CALLS)}), never run"
        )

    def run(self, tree: ast.Module) -> dict[str, Any]:
        scope: dict[str, Any] = {}
        for statement in tree.body:
            try:
                self.statement(statement, scope)
            except (UnsafeConfigError, ConfigFileError):
                raise
            except Exception as err:  # an expression of plain values that fails: 1 / 0, a missing key
                raise ConfigFileError(
                    f"config file {self.path}, line {statement.lineno}: {type(err).__name__}: {err}"
                ) from None
        return scope

    def statement(self, node: ast.stmt, scope: dict[str, Any]) -> None:
        if isinstance(node, ast.Assign):
            value = self.expr(node.value, scope)
            for target in node.targets:
                self.assign(target, value, scope)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self.assign(node.target, self.expr(node.value, scope), scope)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            current = self.name(node.target, scope)
            scope[node.target.id] = _binary(node.op, current, self.expr(node.value, scope))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # a docstring or a bare literal
        elif isinstance(node, ast.Expr) and self.is_dict_update(node.value):
            receiver = self.name(node.value.func.value, scope)
            if not isinstance(receiver, dict):
                raise self.refuse(node, f"'.update' on a {type(receiver).__name__}")
            receiver.update(*self.elements(node.value.args, scope), **self.keywords(node.value.keywords, scope))
        else:
            raise self.refuse(node, f"a statement of type '{type(node).__name__}'")

    @staticmethod
    def is_dict_update(node: ast.expr) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and isinstance(node.func.value, ast.Name)
        )

    def assign(self, target: ast.expr, value: Any, scope: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value)
            if len(values) != len(target.elts):
                raise ValueError(f"cannot unpack {len(values)} values into {len(target.elts)} names")
            for element, item in zip(target.elts, values):
                self.assign(element, item, scope)
        else:
            raise self.refuse(target, f"assigning to a '{type(target).__name__}'")

    def name(self, node: ast.Name, scope: Mapping[str, Any]) -> Any:
        if node.id in scope:
            return scope[node.id]
        raise ConfigFileError(f"config file {self.path}, line {node.lineno}: name '{node.id}' is not defined")

    def keywords(self, keywords: list[ast.keyword], scope: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for keyword in keywords:
            items = self.expr(keyword.value, scope)
            for name, value in dict(items).items() if keyword.arg is None else [(keyword.arg, items)]:
                if name in result:
                    raise TypeError(f"got multiple values for keyword argument '{name}'")
                result[name] = value
        return result

    def elements(self, nodes: list[ast.expr], scope: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = []
        for node in nodes:
            if isinstance(node, ast.Starred):
                values.extend(self.expr(node.value, scope))
            else:
                values.append(self.expr(node, scope))
        return _check_size(values)

    def expr(self, node: ast.expr, scope: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.name(node, scope)
        if isinstance(node, ast.List):
            return self.elements(node.elts, scope)
        if isinstance(node, ast.Tuple):
            return tuple(self.elements(node.elts, scope))
        if isinstance(node, ast.Set):
            return set(self.elements(node.elts, scope))
        if isinstance(node, ast.Dict):
            result: dict[Any, Any] = {}
            for key, value in zip(node.keys, node.values):
                if key is None:
                    result.update(self.expr(value, scope))
                else:
                    result[self.expr(key, scope)] = self.expr(value, scope)
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            return _binary(node.op, self.expr(node.left, scope), self.expr(node.right, scope))
        if isinstance(node, ast.UnaryOp):
            return _UNARY_OPS[type(node.op)](self.expr(node.operand, scope))
        if isinstance(node, ast.BoolOp):
            return self.bool_op(node, scope)
        if isinstance(node, ast.Compare):
            left = self.expr(node.left, scope)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.expr(comparator, scope)
                if not _COMPARE_OPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.expr(node.body if self.expr(node.test, scope) else node.orelse, scope)
        if isinstance(node, ast.Subscript):
            return self.expr(node.value, scope)[self.expr(node.slice, scope)]
        if isinstance(node, ast.Slice):
            parts = (node.lower, node.upper, node.step)
            return slice(*(None if part is None else self.expr(part, scope) for part in parts))
        if isinstance(node, ast.JoinedStr):
            return "".join(str(self.expr(value, scope)) for value in node.values)
        if isinstance(node, ast.FormattedValue):
            value = self.expr(node.value, scope)
            if node.conversion in _CONVERSIONS:
                value = _CONVERSIONS[node.conversion](value)
            spec = "" if node.format_spec is None else self.expr(node.format_spec, scope)
            return format(value, spec)
        if isinstance(node, ast.Call):
            return self.call(node, scope)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            items = [self.expr(node.elt, inner) for inner in self.comprehension(node.generators, scope)]
            return set(items) if isinstance(node, ast.SetComp) else items
        if isinstance(node, ast.DictComp):
            return {
                self.expr(node.key, inner): self.expr(node.value, inner)
                for inner in self.comprehension(node.generators, scope)
            }
        if isinstance(node, ast.Attribute):
            raise self.refuse(node, f"attribute access ('.{node.attr}')")
        raise self.refuse(node, f"an expression of type '{type(node).__name__}'")

    def bool_op(self, node: ast.BoolOp, scope: Mapping[str, Any]) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.expr(operand, scope)
            if isinstance(node.op, ast.And) and not value:
                return value
            if isinstance(node.op, ast.Or) and value:
                return value
        return value

    def call(self, node: ast.Call, scope: Mapping[str, Any]) -> Any:
        args = self.elements(node.args, scope)
        kwargs = self.keywords(node.keywords, scope)
        if isinstance(node.func, ast.Name):
            if node.func.id not in SAFE_CALLS or node.func.id in scope:
                raise self.refuse(node, f"calling '{node.func.id}'")
            return _check_size(SAFE_CALLS[node.func.id](*args, **kwargs))
        if isinstance(node.func, ast.Attribute):
            receiver = self.expr(node.func.value, scope)
            allowed = _SAFE_METHODS.get(type(receiver), set())
            if node.func.attr not in allowed:
                raise self.refuse(node, f"calling '.{node.func.attr}' on a {type(receiver).__name__}")
            return _check_size(getattr(receiver, node.func.attr)(*args, **kwargs))
        raise self.refuse(node, f"calling a '{type(node.func).__name__}'")

    def comprehension(self, generators: list[ast.comprehension], scope: Mapping[str, Any]) -> Iterable[ChainMap]:
        """Every binding of the comprehension's loop names, as scopes over `scope`, in order."""
        first, rest = generators[0], generators[1:]
        if first.is_async:
            raise self.refuse(first.target, "an async comprehension")
        count = 0
        for item in self.expr(first.iter, scope):
            count += 1
            if count > MAX_ITEMS:
                raise ValueError(f"a comprehension over more than {MAX_ITEMS} elements")
            inner: ChainMap = ChainMap({}, scope)
            self.assign(first.target, item, inner.maps[0])
            if all(self.expr(condition, inner) for condition in first.ifs):
                if rest:
                    yield from self.comprehension(rest, inner)
                else:
                    yield inner


def _merge(child: dict[str, Any], base: dict[str, Any], path: str, where: str = "") -> dict[str, Any]:
    """`child` merged into a copy of `base`: dicts key by key, a dict with `_delete_=True` and any other value
    replacing the base's entry."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and key in merged and not value.pop(DELETE_KEY, False):
            if not isinstance(merged[key], dict):
                raise ConfigFileError(
                    f"config file {path}: '{where}{key}' is a dict but its base value is a "
                    f"{type(merged[key]).__name__}; set {DELETE_KEY}=True in it to replace the base value"
                )
            merged[key] = _merge(value, merged[key], path, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        return ast.parse(source, filename=path)
    except SyntaxError as err:
        line = (err.text or "").strip()
        raise ConfigSyntaxError(f"config file {path}, line {err.lineno}: {err.msg}: {line!r}") from None
    except (RecursionError, MemoryError):
        raise ConfigSyntaxError(f"config file {path}: an expression is nested too deeply to parse") from None


def _read_data_file(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        try:
            content = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ConfigSyntaxError(f"config file {path} does not parse: {err}") from None
    if not isinstance(content, dict):
        raise ConfigFileError(f"config file {path} holds a {type(content).__name__}, expected a mapping of keys")
    return content


def read_config_file(path: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a config file (and its bases) as data.

    Args:
        path: a ``.py`` file in mmdetection's config format, or a ``.json`` / ``.yaml`` / ``.yml`` file.

    Returns:
        The config's entries, bases merged in, as plain dicts, lists, tuples and scalars.

    Raises:
        ConfigSyntaxError: the file or a base does not parse.
        UnsafeConfigError: the file uses a construct that would run code.
        ConfigFileError: an undefined name, a failing expression, a missing or cyclic base, a key in two bases.
    """
    path = osp.normpath(path)
    if path in _chain:
        raise ConfigFileError(f"config file {path} is its own base (through {' -> '.join(_chain)})")
    if not osp.isfile(path):
        named_by = f" (named in _base_ of {_chain[-1]})" if _chain else ""
        raise ConfigFileError(f"config file not found: {path}{named_by}")
    if path.endswith(".py"):
        entries = _Interpreter(path).run(_parse(path))
        entries = {name: value for name, value in entries.items() if not name.startswith("__")}
    elif path.endswith((".json", ".yaml", ".yml")):
        entries = _read_data_file(path)
    else:
        raise ConfigFileError(f"config file {path}: expected a .py, .json, .yaml or .yml file")

    bases = entries.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(base, str) for base in bases):
        raise ConfigFileError(f"config file {path}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    merged_bases: dict[str, Any] = {}
    defined_in: dict[str, str] = {}
    for base in bases:
        if "::" in base:
            raise ConfigFileError(
                f"config file {path}: base '{base}' names a package config; copy it beside the config and name its path"
            )
        base_path = osp.join(osp.dirname(path), base)
        for key, value in read_config_file(base_path, (*_chain, path)).items():
            if key in merged_bases:
                raise ConfigFileError(
                    f"config file {path}: key '{key}' is defined by two of its bases, {defined_in[key]} and {base}"
                )
            merged_bases[key] = value
            defined_in[key] = base
    return _merge(entries, merged_bases, path)
