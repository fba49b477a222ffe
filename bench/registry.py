"""Plugin lookup: built-ins, installed entry points, or a `module:Class` path."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

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
        out.setdefault(name, f"plugin from {ep.value}")
    return out


def merge_params(kind: str, name: str, defaults: dict, params: dict) -> dict:
    """A plugin's defaults overridden by `params`; an unknown parameter is a user error."""
    bad = sorted(set(params) - set(defaults))
    if bad:
        raise UserError(f"{kind} {name!r} has no parameter {bad[0]!r}; valid parameters: {', '.join(sorted(defaults)) or '(none)'}")
    return {**defaults, **params}
