"""What a protocol declares about the suite: its `[[defenses]]` entry dataclass and the `[data]` keys it owns.

A suite key is a `Key(schema, meaning)`: a JSON Schema fragment and the phrase an error message uses
("a whole number >= 0"). A protocol's entry dataclass (a subclass of `Entry`) lists the keys its
`[[defenses]]` entries may hold, each field with its `Key` in the field's metadata (`key(...)`): the
suite schema (bench.suite_schema) checks the keys every entry has (`Entry`'s own), and at plan time an
entry is parsed into its protocol's dataclass (`parse_entry`), so a key the protocol does not read is a
one-line error naming the keys it does read (loading a suite imports no protocol). `OWNED_DATA_KEYS` holds the `[data]` keys of the datasets
a protocol owns (GLUE's tasks, MMBench's judge); `LEGACY_RULES` how a row written before rows named their
protocol is recognised (each protocol states its own rule).

This module is the ground floor: it imports nothing of the harness but errors.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Callable

import jsonschema

from bench.errors import UserError, show


@dataclass(frozen=True)
class Key:
    schema: dict
    meaning: str


def integer(minimum: int | None = None) -> Key:
    return Key({"type": "integer", **({} if minimum is None else {"minimum": minimum})},
               "a whole number" + ("" if minimum is None else f" >= {minimum}"))


def number(minimum: float | None = None) -> Key:
    return Key({"type": "number", **({} if minimum is None else {"minimum": minimum})},
               "a number" + ("" if minimum is None else f" >= {minimum:g}"))


def string(*choices: str) -> Key:
    if choices:
        return Key({"enum": list(choices)}, "one of " + ", ".join(repr(c) for c in choices))
    return Key({"type": "string"}, "a string")


def one_or_list(item: Key, plural: str, min_items: int = 0) -> Key:
    extra = {"minItems": min_items} if min_items else {}
    text = f"{item.meaning} or a list of {plural}" + (f" (at least {min_items})" if min_items else "")
    return Key({"anyOf": [item.schema, {"type": "array", "items": item.schema, **extra}]}, text)


def list_of(item: Key, plural: str, min_items: int = 0) -> Key:
    extra = {"minItems": min_items} if min_items else {}
    text = f"a list of {plural}" + (f" (at least {min_items})" if min_items else "")
    return Key({"type": "array", "items": item.schema, **extra}, text)


def table(values: Key | None = None, what: str = "a table") -> Key:
    return Key({"type": "object", **({"additionalProperties": values.schema} if values else {})}, what)


ATTACK = Key({"anyOf": [{"type": "string", "minLength": 1},
                        {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}]},
             "a name or a table {name = \"...\", <parameters>}")
SWEEP_VALUES = Key({"anyOf": [{"type": "array", "minItems": 1}, {"type": ["number", "string", "boolean"]}]},
                   "a non-empty list of values")
ATTACKS = Key({"anyOf": [ATTACK.schema, {"type": "array", "items": ATTACK.schema, "minItems": 1}]},
              "a non-empty list of attack names or tables {name = \"...\", <parameters>}")


def key(spec: Key, default=MISSING, *, factory=MISSING, parse: Callable | None = None):
    """A field of an entry dataclass: its suite `Key`, its default, and how a TOML value becomes the field's
    value (`parse`, e.g. a scalar-or-list as a list)."""
    meta = {"key": spec, "parse": parse}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def as_list(value) -> list:
    """A scalar or a list (the schema allows either where a list is meant) as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True, kw_only=True)
class Entry:
    """The keys every `[[defenses]]` entry may hold, whatever its protocol. A protocol's entry dataclass
    subclasses it and adds the keys it reads (`key(...)` fields)."""

    name: str = key(string())
    label: str = key(Key({"type": "string", "minLength": 1}, "a non-empty string (unique among the entries)"), "")
    params: dict = key(table(what="a table of parameter = value"), factory=dict, parse=dict)
    sweep: dict = key(table(SWEEP_VALUES, "a table of parameter = [values]"), factory=dict,
                      parse=lambda v: {k: as_list(x) for k, x in v.items()})
    tier: str = key(string("default", "full"), "default")
    index: int = 0  # the entry's position in the suite (1-based in messages); not a suite key

    @property
    def title(self) -> str:
        return self.label or self.name

    @classmethod
    def keys(cls) -> dict[str, Key]:
        """The suite keys of this entry dataclass: field name -> Key."""
        return {f.name: f.metadata["key"] for f in fields(cls) if "key" in f.metadata}


# the keys several protocols read, each declared once
def trials_key(default: int = 1):
    return key(integer(1), default)


def attacks_key():
    return key(ATTACKS, factory=lambda: ["none"], parse=as_list)


def models_key():
    return key(one_or_list(string(), "model labels or specs"), factory=list, parse=lambda v: [str(m) for m in as_list(v)])


# -- what protocols declared so far (filled when a protocol class is defined) ----------------------------
OWNED_DATA_KEYS: dict[str, dict[str, Key]] = {}  # dataset a protocol owns -> its [data] keys
BOARD_KEYS: dict[str, Key] = {}  # [standard_attacks]: one key per board a protocol declared
LEGACY_RULES: list[Callable[[dict], str | None]] = []  # a row without "protocol" -> its protocol, or None
_DEFAULT_LEGACY: list[str] = []  # the protocol of a row no rule claims


def declare_board(name: str) -> None:
    BOARD_KEYS.setdefault(name, list_of(ATTACK, "attack names or tables {name = \"...\", <parameters>}"))


def declare_data(dataset: str, keys: dict[str, Key]) -> None:
    OWNED_DATA_KEYS[dataset] = dict(keys)


def declare_legacy(rule: Callable[[dict], str | None], *, default: str | None = None) -> None:
    LEGACY_RULES.append(rule)
    if default and not _DEFAULT_LEGACY:
        _DEFAULT_LEGACY.append(default)


def legacy_protocol(row: dict) -> str:
    """The protocol of a row written before rows named it: the first protocol whose declared rule claims it."""
    for rule in LEGACY_RULES:
        name = rule(row)
        if name:
            return name
    return _DEFAULT_LEGACY[0] if _DEFAULT_LEGACY else ""


def parse_entry(cls: type[Entry], raw: dict, *, index: int, protocol: str, where: str) -> Entry:
    """`raw` (one [[defenses]] table as read) as `cls`: a key `cls` does not declare, or a value its Key
    rejects, is one UserError line naming the entry, the key and what would be right (as the suite schema words it)."""
    declared = cls.keys()
    extra = sorted(set(raw) - set(declared))
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r} in [[defenses]] #{index}; valid: {', '.join(sorted(declared))} "
                        f"(the keys the {protocol} protocol reads; {raw.get('name', '?')!r} is scored by it)")
    values = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        spec, value = f.metadata["key"], raw[f.name]
        if not jsonschema.Draft202012Validator(spec.schema).is_valid(value):
            if value == []:
                raise UserError(f"{where}: [[defenses]] #{index} {f.name} is empty; it must be {spec.meaning}")
            raise UserError(f"{where}: [[defenses]] #{index} {f.name} = {show(value)} is not valid: it must be "
                            f"{spec.meaning}")
        parse = f.metadata.get("parse")
        values[f.name] = parse(value) if parse else value
    return cls(index=index, **values)
