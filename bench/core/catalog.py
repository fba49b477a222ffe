"""`authbench list defenses|attacks|models` without importing the plugins (issue 26): their metadata read
from the source.

Every built-in plugin declares its `name` and one-line `description` on its class (and a model source its
`pattern`) as literals, and registers itself with a decorator (`@DEFENSES.register`, or a helper such as
`register_fingerprint` that calls it) or a module-level `REGISTRY.register(Class)`. This module finds those
classes by reading the registry's modules, and the project modules they import, with `ast`, and evaluates
the literals: no plugin module is imported, so neither is torch. A model source whose listing is not its
pattern names a light function that computes it (`ModelSource.listing = "module:function"`, e.g. the zoo's
names), which is imported and called.

Whatever cannot be read this way (a description that is not a literal, a registration the scan does not
recognise) makes `static_describe` answer None, and the caller imports the registry as before; a test holds
the two answers equal. Installed third-party plugins (entry points) are always loaded to be described.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from bench.core.registry import describe_installed, installed_names, one_line

ROOT = Path(__file__).resolve().parents[2]  # the folder holding the bench and baselines packages
PROJECT = ("bench", "baselines")


def module_file(name: str) -> Path | None:
    """The source file of a project module, found without importing it (or its package)."""
    if name.split(".")[0] not in PROJECT:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


class _Unreadable(Exception):
    """A registration or an attribute the static reading cannot settle: the caller imports instead."""


class _Module:
    def __init__(self, name: str, path: Path):
        self.name, self.tree = name, ast.parse(path.read_text(), str(path))
        self.is_package = path.name == "__init__.py"
        self.classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}
        self.functions = {n.name: n for n in self.tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.imported: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
        self.imports: list[str] = []  # project modules this one imports (anywhere in it)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                module = self._absolute(node)
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = (module, alias.name)
                    self.imports += [module, f"{module}.{alias.name}"]
            elif isinstance(node, ast.Import):
                self.imports += [alias.name for alias in node.names]

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = self.name.split(".")
        parts = parts if self.is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))


class _Scan:
    """The registry's modules, and what importing them imports that can register (the submodules a
    package's __init__ imports); other project modules are read only when a base class is looked up there."""

    def __init__(self, modules: tuple[str, ...]):
        self.modules: dict[str, _Module] = {}
        self.scanned: list[str] = []  # the modules whose registrations count
        todo = list(modules)
        while todo:
            name = todo.pop(0)
            module = self.load(name)
            if module is None or name in self.scanned:
                continue
            self.scanned.append(name)
            if module.is_package:  # a package imports its plugin modules
                todo += [m for m in module.imports if m.startswith(name + ".") and module_file(m) is not None]

    def load(self, name: str) -> _Module | None:
        if name not in self.modules:
            path = module_file(name)
            if path is None:
                return None
            self.modules[name] = _Module(name, path)
        return self.modules[name]

    def find_class(self, module: _Module, name: str, depth: int = 0) -> tuple[_Module, ast.ClassDef]:
        if name in module.classes:
            return module, module.classes[name]
        if name in module.imported and depth < 10:
            source, attr = module.imported[name]
            found = self.load(source)
            if found is not None:
                return self.find_class(found, attr, depth + 1)
        raise _Unreadable(f"class {name} of {module.name}")

    def attribute(self, module: _Module, cls: ast.ClassDef, attr: str, default=None, depth: int = 0):
        """A class attribute's literal value, looked up through the bases (None: not declared anywhere)."""
        for node in cls.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) and node.value is not None else []
            if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
                try:
                    return ast.literal_eval(node.value)
                except ValueError:
                    raise _Unreadable(f"{cls.name}.{attr} is not a literal") from None
        for base in cls.bases:
            if isinstance(base, ast.Name) and depth < 20:
                if base.id == "object":
                    continue
                owner, found = self.find_class(module, base.id)
                value = self.attribute(owner, found, attr, _MISSING, depth + 1)
                if value is not _MISSING:
                    return value
            elif not isinstance(base, ast.Name):
                raise _Unreadable(f"a base of {cls.name}")
        return default

    def defines(self, module: _Module, cls: ast.ClassDef, method: str, stop: str, depth: int = 0) -> bool:
        """Whether the class or a base below `stop` defines `method`."""
        if cls.name == stop:
            return False
        if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == method for n in cls.body):
            return True
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id != stop and depth < 20:
                owner, found = self.find_class(module, base.id)
                if self.defines(owner, found, method, stop, depth + 1):
                    return True
        return False

    def registered(self, registry: str) -> list[tuple[_Module, ast.ClassDef, str | None]]:
        """(module, class, name given at registration) of every class registered in `registry`, in no order."""

        def is_register(node) -> bool:  # REGISTRY.register
            return (isinstance(node, ast.Attribute) and node.attr == "register" and isinstance(node.value, ast.Name)
                    and node.value.id == registry)

        scanned = [self.modules[name] for name in self.scanned]
        helpers = set()  # functions that pass their argument to REGISTRY.register (e.g. register_fingerprint)
        for module in scanned:
            for fn in module.functions.values():
                if any(isinstance(n, ast.Call) and is_register(n.func) for n in ast.walk(fn)):
                    helpers.add(fn.name)
        out = []
        for module in scanned:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.ClassDef):
                    for dec in node.decorator_list:
                        if is_register(dec) or (isinstance(dec, ast.Name) and dec.id in helpers):
                            out.append((module, node, None))
                        elif isinstance(dec, ast.Call) and is_register(dec.func):
                            named = [k.value for k in dec.keywords if k.arg == "name"]
                            if dec.args or (named and not isinstance(named[0], ast.Constant)):
                                raise _Unreadable(f"the registration of {node.name}")
                            out.append((module, node, named[0].value if named else None))
                elif isinstance(node, ast.Call) and is_register(node.func):
                    inside = next((f for f in module.functions.values() if node in set(ast.walk(f))), None)
                    if inside is not None and inside.name in helpers:
                        continue  # the helper's own call: its decorated classes are found above
                    if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Name):
                        raise _Unreadable(f"a {registry}.register call in {module.name}")
                    owner, cls = self.find_class(module, node.args[0].id)
                    out.append((owner, cls, None))
        return out


_MISSING = object()


def _builtins(modules: tuple[str, ...], registry: str) -> list[tuple[str, dict]]:
    """(name, literal attributes) of every built-in registered in `registry`, from the source."""
    scan = _Scan(modules)
    seen: dict[str, dict] = {}
    for module, cls, given in scan.registered(registry):
        name = given or scan.attribute(module, cls, "name")
        if not isinstance(name, str) or not name:
            raise _Unreadable(f"the name of {cls.name}")
        attrs = {"description": scan.attribute(module, cls, "description", ""),
                 "pattern": scan.attribute(module, cls, "pattern", ""),
                 "listing": scan.attribute(module, cls, "listing", None),
                 "custom_models": scan.defines(module, cls, "models", "ModelSource")}
        if name in seen and seen[name] != attrs:
            raise _Unreadable(f"{name} is registered twice")
        seen[name] = attrs
    return list(seen.items())


# what `authbench list` describes statically: kind -> (the module that defines the registry, its variable)
KINDS = {
    "defenses": ("bench.defenses.base", "DEFENSES"),
    "attacks": ("bench.attacks.base", "ATTACKS"),
    "models": ("bench.models.source_base", "SOURCES"),
}


def registry_declaration(module: str, variable: str) -> tuple[tuple[str, ...], str]:
    """(the modules whose import registers the built-ins, the entry-point group) of `variable = Registry(kind,
    group, ..., modules=(...))` in `module`, read from its source."""
    path = module_file(module)
    if path is None:
        raise _Unreadable(f"module {module}")
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(
            node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == variable and isinstance(node.value, ast.Call):
            call = node.value
            try:
                group = ast.literal_eval(call.args[1]) if len(call.args) > 1 else ast.literal_eval(
                    next(k.value for k in call.keywords if k.arg == "group"))
                modules = next((ast.literal_eval(k.value) for k in call.keywords if k.arg == "modules"), ())
            except (ValueError, StopIteration):
                raise _Unreadable(f"the declaration of {variable}") from None
            return (module, *modules), str(group)
    raise _Unreadable(f"no {variable} = Registry(...) in {module}")


def static_describe(kind: str) -> dict[str, str] | None:
    """What `authbench list <kind>` prints (name -> description, as the registry's `describe()` or
    `list_models()` gives it), read from the source; None where that cannot be done."""
    where, registry = KINDS[kind]
    try:
        modules, group = registry_declaration(where, registry)
        found = _builtins(modules, registry)
    except (_Unreadable, OSError, SyntaxError):
        return None
    if kind != "models":
        out = {name: one_line(attrs["description"]) for name, attrs in sorted(found)}
        out.update(describe_installed(group, out))
        return out
    models: dict[str, str] = {}
    for name, attrs in found:  # registration order is not known statically: list_models' order is the file's
        if attrs["listing"]:
            module, _, function = str(attrs["listing"]).partition(":")
            models.update(getattr(importlib.import_module(module), function)())
        elif attrs["custom_models"]:
            return None  # a `models()` method the source does not name a light listing for
        else:
            models[attrs["pattern"] or f"{name}:<model>"] = attrs["description"]
    for name in installed_names(group):
        if name not in dict(found):
            return None  # a third-party source: its models() needs the class
    return models
