"""The suite file's schema: every section and key in one table, checked by JSON Schema (jsonschema).

`SECTIONS` maps each section to its keys; each key is a `Key(schema, meaning)` (bench.core.entry), where
`schema` is a JSON Schema fragment and `meaning` the phrase an error message uses ("a whole number >= 0").
To add a key, add one line to its section's table here and a row to the key table in docs/suites.md:
nothing else validates it. The `[[defenses]]` keys are the fields of the protocols' entry dataclasses
(bench.protocols.base.Protocol.entry), and the [check] tolerance metrics are the protocols' declared
`check_metrics`. `schema()` builds the whole JSON Schema from the table (every section
rejects keys it does not list), and `validate(raw, where)` checks a parsed TOML document, raising
one `UserError` line that names the bad key or value and what would be right.

Three parts of a suite are not fixed here, because what they accept is declared elsewhere:

- `[data]` options beyond the common keys (`root`, `path`, `resize`, ...) are the registered
  dataset loader's own keyword arguments (`bench.data`), or, for the datasets a protocol owns
  (GLUE, MMBench), the keys that protocol declares (`data_keys`, bench.core.entry.OWNED_DATA_KEYS);
- defense and attack parameters (`params`, `sweep`, attack tables) are the registered class's own
  `defaults` (and optional `param_schema`): `bench.core.registry.check_params`, called by every plugin's
  constructor when the engine plans the suite, validates them (types inferred from the defaults),
  so a parameter a defense declares is validated without editing this file;
- model spec tables are checked by their source (`bench.models.sources.SOURCE_KEYS`).
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache

import jsonschema

from bench.core.metrics import BOARDS, CHECK_METRICS, LEGACY_METRICS  # the built-in protocols' boards and metrics
from bench.data import DATASETS
from bench.core.errors import UserError, show
from bench.executors import EXECUTORS, executor_options
from bench.fingerprint.suspects import ZooConfig
from bench.core.declared import check_metrics
from bench.core.entry import (ATTACK, BOARD_KEYS, OWNED_DATA_KEYS, Entry, Key, integer, list_of, number, one_or_list,
                              string, table)


_integer, _number, _string, _one_or_list, _list, _table = integer, number, string, one_or_list, list_of, table
MODEL_SPEC = Key({"anyOf": [{"type": "string", "pattern": "^[^:]+:.+$"}, {"type": "object"}]},
                 "a 'source:name' string or a table with a source (see docs/suites.md, Models)")


def _check_tolerance() -> Key:
    """[check] tolerance: a table metric = points over the metrics the protocols declared (bench.core.declared)."""
    metrics = [*{**CHECK_METRICS, **check_metrics(load=False)}, *LEGACY_METRICS]  # loading a suite imports no protocol
    return Key({"type": "object", "propertyNames": {"enum": metrics},
                "additionalProperties": {"type": "number", "minimum": 0}},
               "a table metric = points (>= 0), metrics: " + ", ".join(metrics))


# -- the key table: section -> key -> Key ------------------------------------------------------------
SECTIONS: dict[str, dict[str, Key]] = {
    "suite": {
        "name": _string(),  # also a folder name: checked in bench.suite (SUITE_NAME)
        "description": _string(),
        "seed": _integer(0),
    },
    "data": {
        "dataset": _string(),
        "split": _string(),
        "subset": _integer(0),
        "subset_seed": _integer(0),
        "train_split": _string(),
        "encode_space": _string("model", "pixel"),
    },
    "models": {
        "authorized": _one_or_list(MODEL_SPEC, "model specs", min_items=1),
        "evaluated": _one_or_list(MODEL_SPEC, "model specs", min_items=1),
        "python_path": _list(Key({"type": "string", "minLength": 1}, "a folder"),
                             "folders (relative to the suite file) that factory / loader modules import from"),
    },
    # each [[defenses]] entry: the keys every entry has (bench.core.entry.Entry); the keys of its protocol's entry
    # dataclass are that protocol's to check, when the engine plans the suite (Protocol.parse_entry)
    "defenses": Entry.keys(),
    "check": {
        "tolerance": Key({"type": "object"}, "a table metric = points (>= 0)"),  # the declared metrics: _check_tolerance
        "default_tolerance": _number(0),
        "inference_tolerance": _number(0),
        "trials": _integer(1),
    },
    "report": {
        "psnr": _one_or_list(_number(), "numbers (dB)"),
        "release": _one_or_list(_string(), "release format names"),
        "paper_dataset": _string(),
        "paper_models": _table(_string(), "a table label = \"paper's model name\""),
        "paper_variants": _table(_string(), "a table label = \"paper's model name\""),
        "paper_psnr": _number(),
        "corelocker_compare": _table(_string(), "a table label = \"paper's model name\""),
        "corelocker_setting": _string(),
        "table3": Key({"type": "object", "additionalProperties": False,
                       "properties": {"ne": {"type": "string"}, "psnr": {"type": "number"},
                                      "release": {"type": "string"}}},
                      "a table with ne (a defense name), psnr (a number) and release (a string)"),
    },
    # bench.reports.boards: the attack set each board's rows are scored under, per board of the built-in protocols
    # (bench.core.metrics.BOARDS) and of the protocols declared so far
    "standard_attacks": {board: _list(ATTACK, "attack names or tables {name = \"...\", <parameters>}") for board in BOARDS},
    "run": {
        "batch_size": _integer(1),
        "device": Key({"type": "string", "pattern": r"^(cpu|cuda|cuda:\d+|auto)$"}, "'cpu', 'cuda', 'cuda:N' or 'auto'"),
        "threads": _integer(1),
        "precision": _string("float32", "bfloat16", "float16"),  # forwards under autocast (bench.engine.context)
        "channels_last": Key({"type": "boolean"}, "true or false"),
    },
}


def executor_keys(executor: str | None = None) -> dict[str, Key]:
    """The [executor] keys: `name` and every option the executors declare (bench.executors.Option), over
    the built-ins, installed plugins and `executor` (one named by path in the suite). A key several
    executors declare differently takes any of their values; the executor chosen checks its own."""
    keys = {"name": _string()}
    for name, decls in executor_options(executor).items():
        forms: list[tuple[dict, str, list[str]]] = []
        for ex, option in decls:
            same = next((f for f in forms if f[0] == option.schema), None)
            if same:
                same[2].append(ex)
            else:
                forms.append((option.schema, option.meaning, [ex]))
        if len(forms) == 1:
            keys[name] = Key(forms[0][0], forms[0][1])
        else:
            keys[name] = Key({"anyOf": [f[0] for f in forms]},
                             " or ".join(f"{meaning} ({', '.join(exs)})" for _, meaning, exs in forms))
    return keys


SECTIONS["executor"] = executor_keys()

# [suspects] (ownership verification) is bench.fingerprint.suspects.ZooConfig: its fields are its keys
_FIELD_KEYS = {"tuple": _list(Key({}, "values"), "values"), "int": _integer(0), "float": _number(0),
               "str": _string(), "bool": Key({"type": "boolean"}, "true or false")}
SECTIONS["suspects"] = {f.name: _FIELD_KEYS.get(str(f.type), Key({}, "a value")) for f in fields(ZooConfig)
                        if f.name != "seed"}

REQUIRED = {"": ("data", "models", "defenses"), "data": ("dataset",), "models": ("authorized",), "defenses": ("name",)}

# [data] options of the datasets a protocol owns (they have no loader in bench.data): bench.core.entry.OWNED_DATA_KEYS,
# declared by each such protocol (its `data_keys`)


def _object(keys: dict[str, Key], required=()) -> dict:
    return {"type": "object", "properties": {k: v.schema for k, v in keys.items()}, "required": list(required),
            "additionalProperties": False}


def _sections(executor: str | None = None) -> dict[str, dict[str, Key]]:
    """SECTIONS, with the [executor] keys of an executor the suite names by path added."""
    if not executor or executor in EXECUTORS.names():
        return SECTIONS
    return {**SECTIONS, "executor": executor_keys(executor)}


def _executor_named(raw) -> str | None:
    section = raw.get("executor") if isinstance(raw, dict) else None
    name = section.get("name") if isinstance(section, dict) else None
    return name if isinstance(name, str) else None


def schema(executor: str | None = None) -> dict:
    """The suite file's JSON Schema, built from SECTIONS, the protocols' entry dataclasses and their declared check
    metrics (docs/suites.md lists the same keys)."""
    SECTIONS["check"]["tolerance"] = _check_tolerance()
    for board, spec in BOARD_KEYS.items():
        SECTIONS["standard_attacks"].setdefault(board, spec)
    sections = {name: _object(keys, REQUIRED.get(name, ())) for name, keys in _sections(executor).items()}
    sections["defenses"]["additionalProperties"] = True  # the keys of the entry's protocol: checked at plan time
    sections["data"]["additionalProperties"] = True  # the dataset's own options: check_data_options
    sections["defenses"] = {"type": "array", "items": sections["defenses"], "minItems": 1}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "authbench suite",
            **_object({}, REQUIRED[""]), "properties": sections}


@lru_cache(maxsize=8)
def _cached_validator(executor: str | None, declared: tuple) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(executor))


def _validator(executor: str | None = None) -> jsonschema.Draft202012Validator:
    """The validator of today's schema (rebuilt when a protocol defined since declares new keys or metrics)."""
    return _cached_validator(executor, (tuple(BOARD_KEYS), tuple(check_metrics(load=False))))


# -- one line per error ------------------------------------------------------------------------------
def _section_name(path: tuple) -> str:
    if not path:
        return "the suite"
    if path[0] == "defenses" and len(path) > 1:
        return f"[[defenses]] #{path[1] + 1}"
    return f"[{path[0]}]"


def _message(error: jsonschema.ValidationError, raw: dict) -> str:
    SECTIONS = _sections(_executor_named(raw))  # noqa: N806 - the table this suite was checked against
    path = tuple(error.absolute_path)
    entry = 2 if path[:1] == ("defenses",) else 1  # where a key sits: ("data", key) or ("defenses", i, key)
    if error.validator == "additionalProperties" and len(path) <= entry:
        keys = SECTIONS.get(path[0], {}) if path else SECTIONS
        if not path:
            extra = sorted(set(error.instance) - set(SECTIONS))
            return f"unknown section {extra[0]!r}; valid sections: {', '.join(sorted(SECTIONS))}"
        extra = sorted(set(error.instance) - set(keys))
        return f"unknown key {extra[0]!r} in {_section_name(path)}; valid: {', '.join(sorted(keys))}"
    if error.validator == "required" and len(path) <= entry:
        missing = next(k for k in error.validator_value if k not in error.instance)
        if not path:
            return f"missing [{missing}] section"
        return f"{_section_name(path)} needs {missing!r}"
    if error.validator == "type" and len(path) <= entry:  # a section (or a [[defenses]] entry) that is no table
        what = "a list of [[defenses]] tables" if path[:1] == ("defenses",) and len(path) == 1 else "a table"
        return f"{_section_name(path)} must be {what}, got {show(error.instance)}"
    if error.validator == "minItems" and path == ("defenses",):
        return "the suite has no [[defenses]] entry; add at least one, e.g. [[defenses]] name = \"noise\""
    section = path[0]
    key = path[entry]
    spec = SECTIONS[section][key]
    value = raw[section][path[1]][key] if entry == 2 else raw[section][key]
    where = f"{_section_name(path)} {key}"
    if value == [] or (error.validator == "minItems" and len(path) == entry + 1):
        return f"{where} is empty; it must be {spec.meaning}"
    inner = ""
    if len(path) > entry + 1:  # a value inside the key's list or table
        inner = f" ({show(error.instance)} at {'.'.join(str(p) for p in path[entry + 1:])})"
    return f"{where} = {show(value)} is not valid{inner}: it must be {spec.meaning}"


def _plugin_entry_key(error: jsonschema.ValidationError, plugins: bool) -> bool:
    """In a suite with a 'module:Class' plugin entry (`plugins`), whose protocol is imported only when the suite is
    planned: an unknown [standard_attacks] board or [check] tolerance metric (that protocol's to declare)."""
    path = tuple(error.absolute_path)
    if not plugins:
        return False
    if error.validator == "additionalProperties" and path == ("standard_attacks",):
        return True  # a board a plugin protocol declares
    return error.validator == "propertyNames" and path == ("check", "tolerance")  # a metric it declares


def validate(raw: dict, where: str) -> None:
    """Check a parsed suite against the schema: one UserError line, prefixed by `where` (the file)."""
    entries = raw.get("defenses") if isinstance(raw.get("defenses"), list) else []
    plugins = any(isinstance(d, dict) and ":" in str(d.get("name", "")) for d in entries)
    executor = _executor_named(raw)
    validator = _validator(executor if executor and executor not in EXECUTORS.names() else None)
    errors = [e for e in validator.iter_errors(raw) if not _plugin_entry_key(e, plugins)]
    if errors:
        first = min(errors, key=lambda e: (len(e.absolute_path) > 0, [str(p) for p in e.absolute_path],
                                           e.validator != "additionalProperties"))
        try:
            text = _message(first, raw)
        except (KeyError, IndexError, TypeError):  # a shape of error the messages above do not know
            at = ".".join(str(p) for p in first.absolute_path) or "the suite"
            text = f"{at}: {first.message}"
        raise UserError(f"{where}: {' '.join(text.split())}")
    check_data_options(raw["data"], where)


def data_keys(dataset: str) -> list[str] | None:
    """The [data] options `dataset` takes beyond the common keys: its loader's keyword arguments, or the
    owning protocol's (OWNED_DATA_KEYS); None for a dataset neither knows (a third-party protocol's)."""
    if dataset in DATASETS:
        return DATASETS.get(dataset).options
    if dataset in OWNED_DATA_KEYS:
        return list(OWNED_DATA_KEYS[dataset])
    return None


def check_data_options(data: dict, where: str) -> None:
    options = data_keys(str(data["dataset"]))
    if options is None:
        return
    valid = [*SECTIONS["data"], *options]
    extra = sorted(set(data) - set(valid))
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r} in [data] for dataset {data['dataset']!r}; "
                        f"valid: {', '.join(sorted(valid))}")
    typed = OWNED_DATA_KEYS.get(str(data["dataset"]), {})
    for key, spec in typed.items():
        if key in data and not jsonschema.Draft202012Validator(spec.schema).is_valid(data[key]):
            raise UserError(f"{where}: [data] {key} = {show(data[key])} is not valid: it must be {spec.meaning}")
