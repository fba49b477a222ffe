"""Plugin lookup: built-ins, installed entry points, or a `module:Class` path."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import ClassVar

from bench.errors import UserError, unknown


def _entry_points(group: str) -> dict:
    return {ep.name: ep for ep in entry_points(group=group)}


def resolve(kind: str, group: str, builtins: dict[str, type], key: str) -> type:
    """Find plugin `key`: a built-in name, an entry point in `group`, or 'package.module:Class'."""
    if key in builtins:
        return builtins[key]
    eps = _entry_points(group)
    if key in eps:
        return eps[key].load()
    if ":" in key:
        module_name, _, attr = key.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot load {kind} {key!r}: {exc}; expected 'package.module:Class'") from None
    raise unknown(kind, key, [*builtins, *eps, "<package.module:Class>"])


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
    `defaults` that the parameters given override (an unknown parameter is a user error)."""

    plugin_type: ClassVar[str] = "plugin"
    name: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[dict] = {}
    # True when the plugin trains (or draws randomness the pinned models do not fix) at run time: its cells
    # repeat over the suite's [check] trials and `check` derives their tolerance from the spread over trials.
    trains: ClassVar[bool] = False

    def __init__(self, **params):
        bad = sorted(set(params) - set(self.defaults))
        if bad:
            valid = ", ".join(sorted(self.defaults)) or "(none)"
            raise UserError(f"{self.plugin_type} {self.name!r} has no parameter {bad[0]!r}; valid parameters: {valid}")
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
