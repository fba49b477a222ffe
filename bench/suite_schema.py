"""The suite file's schema: every section and key in one table, checked by JSON Schema (jsonschema).

`SECTIONS` maps each section to its keys; each key is a `Key(schema, meaning)`, where `schema` is a
JSON Schema fragment and `meaning` the phrase an error message uses ("a whole number >= 0"). To add
a key, add one line to its section's table here and a row to the key table in docs/suites.md:
nothing else validates it. `schema()` builds the whole JSON Schema from the table (every section
rejects keys it does not list), and `validate(raw, where)` checks a parsed TOML document, raising
one `UserError` line that names the bad key or value and what would be right.

Three parts of a suite are not fixed here, because what they accept is declared elsewhere:

- `[data]` options beyond the common keys (`root`, `path`, `resize`, ...) are the registered
  dataset loader's own keyword arguments (`bench.data`), or, for the datasets a protocol owns
  (GLUE, MMBench), `OWNED_DATA_KEYS` below;
- defense and attack parameters (`params`, `sweep`, attack tables) are the registered class's own
  `defaults` (and optional `param_schema`): `bench.registry.check_params`, called by every plugin's
  constructor when the engine plans the suite, validates them (types inferred from the defaults),
  so a parameter a defense declares is validated without editing this file;
- model spec tables are checked by their source (`bench.models.sources.SOURCE_KEYS`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from functools import lru_cache

import jsonschema

from bench.data import DATASETS
from bench.errors import UserError, show
from bench.fingerprint.suspects import ZooConfig
from bench.reports.reference import METRICS as CHECK_METRICS  # leaderboard and fingerprint metrics


@dataclass(frozen=True)
class Key:
    schema: dict
    meaning: str


def _integer(minimum: int | None = None) -> Key:
    return Key({"type": "integer", **({} if minimum is None else {"minimum": minimum})},
               "a whole number" + ("" if minimum is None else f" >= {minimum}"))


def _number(minimum: float | None = None) -> Key:
    return Key({"type": "number", **({} if minimum is None else {"minimum": minimum})},
               "a number" + ("" if minimum is None else f" >= {minimum:g}"))


def _string(*choices: str) -> Key:
    if choices:
        return Key({"enum": list(choices)}, "one of " + ", ".join(repr(c) for c in choices))
    return Key({"type": "string"}, "a string")


def _one_or_list(item: Key, plural: str, min_items: int = 0) -> Key:
    extra = {"minItems": min_items} if min_items else {}
    text = f"{item.meaning} or a list of {plural}" + (f" (at least {min_items})" if min_items else "")
    return Key({"anyOf": [item.schema, {"type": "array", "items": item.schema, **extra}]}, text)


def _list(item: Key, plural: str, min_items: int = 0) -> Key:
    extra = {"minItems": min_items} if min_items else {}
    text = f"a list of {plural}" + (f" (at least {min_items})" if min_items else "")
    return Key({"type": "array", "items": item.schema, **extra}, text)


def _table(values: Key | None = None, what: str = "a table") -> Key:
    return Key({"type": "object", **({"additionalProperties": values.schema} if values else {})}, what)


MODEL_SPEC = Key({"anyOf": [{"type": "string", "pattern": "^[^:]+:.+$"}, {"type": "object"}]},
                 "a 'source:name' string or a table with a source (see docs/suites.md, Models)")
ATTACK = Key({"anyOf": [{"type": "string", "minLength": 1},
                        {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}]},
             "a name or a table {name = \"...\", <parameters>}")
SWEEP_VALUES = Key({"anyOf": [{"type": "array", "minItems": 1}, {"type": ["number", "string", "boolean"]}]},
                   "a non-empty list of values")

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
    "defenses": {  # each [[defenses]] entry
        "name": _string(),
        "label": Key({"type": "string", "minLength": 1}, "a non-empty string (unique among the entries)"),
        "params": _table(what="a table of parameter = value"),
        "sweep": _table(SWEEP_VALUES, "a table of parameter = [values]"),
        "psnr": _one_or_list(_number(), "numbers (dB)"),
        "psnr_mode": _string("true", "paper-nominal", "paper-code"),
        "evaluation": _string("release", "paper-code"),
        "release": _one_or_list(_string(), "release format names"),
        "attacks": Key({"anyOf": [ATTACK.schema, {"type": "array", "items": ATTACK.schema, "minItems": 1}]},
                       "a non-empty list of attack names or tables {name = \"...\", <parameters>}"),
        "trials": _integer(1),
        "tier": _string("default", "full"),
        "models": _one_or_list(_string(), "model labels or specs"),
    },
    "check": {
        "tolerance": Key({"type": "object", "propertyNames": {"enum": list(CHECK_METRICS)},
                          "additionalProperties": {"type": "number", "minimum": 0}},
                         "a table metric = points (>= 0), metrics: " + ", ".join(CHECK_METRICS)),
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
    "standard_attacks": {  # bench.reports.boards: the attack set each board's rows are scored under
        board: _list(ATTACK, "attack names or tables {name = \"...\", <parameters>}")
        for board in ("input", "model", "baselines", "ownership")
    },
    "run": {
        "batch_size": _integer(1),
        "device": Key({"type": "string", "pattern": r"^(cpu|cuda|cuda:\d+|auto)$"}, "'cpu', 'cuda', 'cuda:N' or 'auto'"),
        "threads": _integer(1),
        "precision": _string("float32", "bfloat16", "float16"),  # forwards under autocast (bench.core.context)
        "channels_last": Key({"type": "boolean"}, "true or false"),
    },
    "executor": {  # bench.executors: local, ray, submitit
        "name": _string(),
        "address": _string(),
        "cpus_per_job": Key({"type": "number", "exclusiveMinimum": 0}, "a number > 0"),
        "gpus_per_job": _number(0),
        "max_in_flight": _integer(1),
        "max_retries": _integer(0),
        "partition": _string(),
        "array_parallelism": _integer(1),
        "time_limit": _integer(1),
        "mem_gb": Key({"type": "number", "exclusiveMinimum": 0}, "a number > 0"),
        "job_folder": _string(),
        "cluster": _string(),
    },
}

# [suspects] (ownership verification) is bench.fingerprint.suspects.ZooConfig: its fields are its keys
_FIELD_KEYS = {"tuple": _list(Key({}, "values"), "values"), "int": _integer(0), "float": _number(0),
               "str": _string(), "bool": Key({"type": "boolean"}, "true or false")}
SECTIONS["suspects"] = {f.name: _FIELD_KEYS.get(str(f.type), Key({}, "a value")) for f in fields(ZooConfig)
                        if f.name != "seed"}

REQUIRED = {"": ("data", "models", "defenses"), "data": ("dataset",), "models": ("authorized",), "defenses": ("name",)}

# [data] options of the datasets a protocol owns (they have no loader in bench.data)
OWNED_DATA_KEYS: dict[str, dict[str, Key]] = {
    "glue": {"tasks": _list(_string(), "GLUE task names", min_items=1), "root": _string(),
             "files": _table(_string(), "a table task = \"file.tsv\"")},
    "mmbench": {"name": _string(), "path": _string(), "root": _string(), "judge": _string()},
}


def _object(keys: dict[str, Key], required=()) -> dict:
    return {"type": "object", "properties": {k: v.schema for k, v in keys.items()}, "required": list(required),
            "additionalProperties": False}


def schema() -> dict:
    """The suite file's JSON Schema, built from SECTIONS (docs/suites.md lists the same keys)."""
    sections = {name: _object(keys, REQUIRED.get(name, ())) for name, keys in SECTIONS.items()}
    sections["data"]["additionalProperties"] = True  # the dataset's own options: check_data_options
    sections["defenses"] = {"type": "array", "items": sections["defenses"], "minItems": 1}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "authbench suite",
            **_object({}, REQUIRED[""]), "properties": sections}


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


# -- one line per error ------------------------------------------------------------------------------
def _section_name(path: tuple) -> str:
    if not path:
        return "the suite"
    if path[0] == "defenses" and len(path) > 1:
        return f"[[defenses]] #{path[1] + 1}"
    return f"[{path[0]}]"


def _message(error: jsonschema.ValidationError, raw: dict) -> str:
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


def validate(raw: dict, where: str) -> None:
    """Check a parsed suite against the schema: one UserError line, prefixed by `where` (the file)."""
    errors = list(_validator().iter_errors(raw))
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
        loader = DATASETS[dataset][1]
        return [p for p in inspect.signature(loader).parameters if p not in ("split", "subset", "subset_seed")]
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
