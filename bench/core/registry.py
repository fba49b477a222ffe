"""Plugin lookup: one generic `Registry[T]` per plugin kind (built-ins, installed entry points of the group
`authbench.<kind>`, or a `module:Class` path), and the parameter checks every plugin shares."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import ClassVar, Generic, Iterable, Iterator, TypeVar

import jsonschema

from bench.core.errors import UserError, article, show, unknown

T = TypeVar("T")


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


def installed_names(group: str) -> list[str]:
    """The names of the installed plugins (entry points) of the group, not loaded."""
    return list(_entry_points(group))


def describe_installed(group: str, known) -> Iterator[tuple[str, str]]:
    """(name, one-line description) of each installed plugin of the entry-point group not in `known`, loaded to
    be described (one that does not load is described by why): what `Registry.describe` and the static listing
    (bench.core.catalog) both add after the built-ins."""
    for name, ep in _entry_points(group).items():
        if name not in known:
            try:
                yield name, one_line(getattr(ep.load(), "description", "")) or f"plugin from {ep.value}"
            except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal: say why
                yield name, f"plugin from {ep.value} (does not load: {type(exc).__name__}: {exc})"


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


def load_path(kind: str, key: str):
    """What 'package.module:attr' names (a user error when it does not import or has no such attribute)."""
    module_name, _, attr = key.partition(":")
    if not module_name or not attr:
        raise UserError(f"cannot load {kind} {key!r}; expected 'package.module:Class'")
    module = _load(kind, key, lambda: importlib.import_module(module_name))
    if not hasattr(module, attr):
        raise UserError(f"cannot load {kind} {key!r}: module {module_name!r} has no {attr!r}; "
                        "expected 'package.module:Class'")
    return getattr(module, attr)


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


class Registry(Generic[T]):
    """One registry per plugin kind (defenses, attacks, protocols, executors, model sources, datasets,
    fingerprint methods, detectors), after lm-evaluation-harness's api/registry.py:

    - built-ins register themselves where they are defined (`@REGISTRY.register`, by the object's `name`);
      `modules` names the modules whose import registers them, imported on first use (so the module that
      holds the registry imports none of its plugins, and no plugin package has to be imported first);
    - third-party plugins are entry points of the group `authbench.<kind>` (loaded only when asked for)
      or, where `paths` allows, a 'package.module:Class' path;
    - with `base`, what an entry point or a path names must be a subclass of it (an instance of it with
      `instances`), else a user error.

    Every registered object declares its own one-line `description` (and its parameters or options:
    `defaults`, `options`, `keys`), so nothing else lists them. An unknown name is one UserError line
    naming the valid ones."""

    def __init__(self, kind: str, group: str, *, base: type | tuple | None = None, modules: Iterable[str] = (),
                 paths: bool = True, instances: bool = False):
        self.kind, self.group, self.base, self.paths, self.instances = kind, group, base, paths, instances
        self._objs: dict[str, T] = {}
        self._modules = tuple(modules)
        self._loading = False
        self._loaded = not self._modules

    # -- registering -----------------------------------------------------------------------------------
    def register(self, obj: T | None = None, *, name: str | None = None):
        """Register `obj` under `name` (default: its `name` attribute); usable as a decorator."""

        def add(o: T) -> T:
            key = name or getattr(o, "name", None)
            if not isinstance(key, str) or not key:
                raise TypeError(f"a registered {self.kind} needs a non-empty str `name`, got {key!r} on {o!r}")
            if key in self._objs and self._objs[key] is not o:
                raise ValueError(f"{self.kind} {key!r} is registered twice: {self._objs[key]!r} and {o!r}")
            self._objs[key] = o
            return o

        return add if obj is None else add(obj)

    def _builtins(self) -> dict[str, T]:
        if not self._loaded and not self._loading:
            self._loading = True  # a built-in module that looks something up while it registers sees the rest later
            try:
                for module in self._modules:
                    importlib.import_module(module)
                self._loaded = True
            finally:
                self._loading = False
        return self._objs

    # -- looking up ------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Built-ins in the order they were registered (a module's plugins in the order it defines them), then
        installed plugins (not loaded)."""
        builtins = self._builtins()
        return [*builtins, *(n for n in installed_names(self.group) if n not in builtins)]

    def get(self, name: str) -> T:
        """The plugin `name`: a built-in, an entry point of the group, or (with `paths`) 'package.module:Class'."""
        builtins = self._builtins()
        if name in builtins:
            return builtins[name]
        eps = _entry_points(self.group)
        if name in eps:
            found = _load(self.kind, name, eps[name].load)
        elif self.paths and isinstance(name, str) and ":" in name:
            found = load_path(self.kind, name)
        else:
            raise unknown(self.kind, str(name), [*builtins, *eps] + (["<package.module:Class>"] if self.paths else []))
        return self._checked(name, found)

    def _checked(self, key: str, found):
        base = self.base
        if base is None:
            return found
        ok = isinstance(found, base) if self.instances else isinstance(found, type) and issubclass(found, base)
        if not ok:
            bases = base if isinstance(base, tuple) else (base,)
            names = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
            what = "an instance" if self.instances else "a subclass"
            raise UserError(f"{key!r} is {_describe(found)}, not {article(self.kind)}; {article(self.kind)} is "
                            f"{what} of {names}")
        return found

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name) -> bool:
        return name in self._builtins() or name in _entry_points(self.group)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, plugin) for every built-in and every installed plugin (loading them)."""
        for name in self.names():
            yield name, self.get(name)

    def describe(self) -> dict[str, str]:
        """name -> its one-line description, built-ins first (by name); a plugin that does not load is listed
        with why."""
        builtins = self._builtins()
        out = {name: one_line(getattr(builtins[name], "description", "")) for name in sorted(builtins)}
        out.update(describe_installed(self.group, out))
        return out

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.group!r})"


def one_line(text) -> str:
    return " ".join(str(text or "").split())
