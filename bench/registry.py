"""Plugin lookup: built-ins, installed entry points, or a `module:Class` path."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import ClassVar

import jsonschema

from bench.errors import UserError, article, show, unknown


def default_schema(value) -> dict:
    """A parameter's JSON Schema inferred from its default: a number stays a number, a string a string, ..."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, (int, float)):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, (list, tuple)):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}  # None or another object: any value


def _meaning(fragment: dict) -> str:
    if "enum" in fragment:
        return "one of " + ", ".join(repr(c) for c in fragment["enum"])
    kind = {"boolean": "true or false", "number": "a number", "integer": "a whole number", "string": "a string",
            "array": "a list", "object": "a table"}.get(fragment.get("type"), "valid")
    low, high = fragment.get("minimum"), fragment.get("maximum")
    if low is not None and high is not None:
        return f"{kind} in [{low:g}, {high:g}]"
    if low is not None or high is not None:
        return f"{kind} {'>=' if low is not None else '<='} {low if low is not None else high:g}"
    return kind



def check_params(kind: str, name: str, defaults: dict, params: dict, param_schema: dict | None = None) -> None:
    """A plugin's parameters against its declared `defaults` (names; types inferred from the defaults) and
    its optional `param_schema` (JSON Schema fragments per parameter, e.g. {"ratio": {"type": "number",
    "minimum": 0, "maximum": 1}}): one UserError line naming the bad parameter and value."""
    bad = sorted(set(params) - set(defaults))
    if bad:
        valid = ", ".join(sorted(defaults)) or "(none)"
        raise UserError(f"{kind} {name!r} has no parameter {bad[0]!r}; valid parameters: {valid}")
    declared = param_schema or {}
    for key in sorted(params):
        fragment = declared.get(key) or default_schema(defaults[key])
        value = list(params[key]) if isinstance(params[key], tuple) else params[key]
        if fragment and not jsonschema.Draft202012Validator(fragment).is_valid(value):
            raise UserError(f"{kind} {name!r} parameter {key} = {show(params[key])} is not valid: it must be "
                            f"{_meaning(fragment)} (default {defaults[key]!r})")


def _entry_points(group: str) -> dict:
    return {ep.name: ep for ep in entry_points(group=group)}


def resolve(kind: str, group: str, builtins: dict[str, type], key: str, base: type | tuple | None = None) -> type:
    """Find plugin `key`: a built-in name, an entry point in `group`, or 'package.module:Class'. With `base`,
    what an entry point or a path names must be a subclass of it (a defense, an attack), else a user error."""
    if key in builtins:
        return builtins[key]
    eps = _entry_points(group)
    if key in eps:
        found = _load(kind, key, eps[key].load)
    elif ":" in key:
        module_name, _, attr = key.partition(":")
        if not module_name or not attr:
            raise UserError(f"cannot load {kind} {key!r}; expected 'package.module:Class'")
        module = _load(kind, key, lambda: importlib.import_module(module_name))
        if not hasattr(module, attr):
            raise UserError(f"cannot load {kind} {key!r}: module {module_name!r} has no {attr!r}; "
                            "expected 'package.module:Class'")
        found = getattr(module, attr)
    else:
        raise unknown(kind, key, [*builtins, *eps, "<package.module:Class>"])
    if base is not None and not (isinstance(found, type) and issubclass(found, base)):
        bases = base if isinstance(base, tuple) else (base,)
        names = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
        raise UserError(f"{key!r} is {_describe(found)}, not {article(kind)}; {article(kind)} is a subclass of {names}")
    return found


def _load(kind: str, key: str, load):
    try:
        return load()
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import: one line, theirs to fix
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"cannot load {kind} {key!r}: {type(exc).__name__}{': ' + text if text else ''}; "
                        "expected an importable 'package.module:Class'") from None


def _describe(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return article(type(obj).__name__)


def describe(group: str, builtins: dict[str, type]) -> dict[str, str]:
    """name -> one-line description, built-ins first, then installed plugins."""
    out = {name: cls.description for name, cls in builtins.items()}
    for name, ep in _entry_points(group).items():
        if name not in out:
            try:
                out[name] = str(getattr(ep.load(), "description", "") or f"plugin from {ep.value}")
            except Exception as exc:  # a broken plugin is listed, not fatal: say why it does not load
                out[name] = f"plugin from {ep.value} (does not load: {type(exc).__name__}: {exc})"
    return out


class Plugin:
    """Base of defenses and attacks: a registry `name`, a one-line `description`, and
    `defaults` that the parameters given override. An unknown parameter, or a value of another type than
    its default's (a string for a number), is a user error; `param_schema` narrows a parameter further
    (JSON Schema, e.g. {"ratio": {"type": "number", "minimum": 0, "maximum": 1}})."""

    plugin_type: ClassVar[str] = "plugin"
    name: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[dict] = {}
    # True when the plugin trains (or draws randomness the pinned models do not fix) at run time: its cells
    # repeat over the suite's [check] trials and `check` derives their tolerance from the spread over trials.
    trains: ClassVar[bool] = False

    param_schema: ClassVar[dict] = {}  # optional JSON Schema fragments per parameter (else inferred from defaults)

    def __init__(self, **params):
        check_params(self.plugin_type, self.name, self.defaults, params, self.param_schema)
        self.params = {**self.defaults, **params}


class Registry:
    """One registry of a kind of plugin: built-ins registered by decorator, third-party ones by the
    entry point `group` or as 'package.module:Class'. Protocols and executors live in one each."""

    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self.builtins: dict[str, type] = {}

    def register(self, cls: type) -> type:
        self.builtins[cls.name] = cls
        return cls

    def get(self, name: str) -> type:
        return resolve(self.kind, self.group, self.builtins, name)

    def names(self) -> list[str]:
        return [*self.builtins, *(n for n in _entry_points(self.group) if n not in self.builtins)]

    def describe(self) -> dict[str, str]:
        return describe(self.group, self.builtins)
