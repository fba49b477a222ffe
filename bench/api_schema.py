"""The Python API's keywords (`bench.evaluate`, `bench.api.run_suite`), validated with the suite schema's keys.

Each keyword maps to a `Key` of bench.suite_schema (the same JSON Schema fragment and wording that
check the suite's [run], [executor] and [data] sections and `authbench run`'s flags), or to a kind
the schema cannot state (a path, a callable, an Executor). `check_keywords` normalises what the
CLI would have given (one string -> a list of one, one number -> a list of one) and raises a typed
`BadKeyword` (a UserError and a ValueError; `UnknownKeyword` is also a TypeError) naming the keyword
and what it takes. Nothing here exits the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema

from bench.errors import BadKeyword, UnknownKeyword, show
from bench.suite_schema import SECTIONS, Key
from bench.executors import Executor

NAMES = Key({"type": "array", "items": {"type": "string", "minLength": 1}}, "a name or a list of names")
NUMBERS = Key({"type": "array", "items": {"type": "number"}}, "a number or a list of numbers (dB)")
FLAG = Key({"type": "boolean"}, "True or False")
PATH, CALLABLE, EXECUTOR = "a path (str or os.PathLike)", "a callable", "an executor name or an Executor"

KEYWORDS: dict[str, Key | str] = {
    "defenses": NAMES, "models": NAMES, "authorized": NAMES, "evaluated": NAMES, "releases": NAMES,
    "psnr": NUMBERS, "full": FLAG, "progress": FLAG, "write_reports": FLAG, "random_weights": FLAG,
    "allow_mixed": FLAG, "rerender": FLAG,
    **{k: SECTIONS["run"][k] for k in ("batch_size", "device", "threads")},
    "subset": SECTIONS["data"]["subset"],
    **{k: v for k, v in SECTIONS["executor"].items() if k not in ("name", "job_folder", "cluster")},
    "out": PATH, "reports": PATH, "cache_dir": PATH, "data_root": PATH, "job_folder": PATH,
    "loader": CALLABLE, "executor": EXECUTOR,
}
LISTS = {k for k, v in KEYWORDS.items() if v in (NAMES, NUMBERS)}


def _fail(keyword: str, value, valid: str) -> BadKeyword:
    return BadKeyword(f"keyword {keyword}={show(value)} is not valid: it must be {valid}", keyword=keyword, valid=valid)


def check_keywords(options: dict) -> dict:
    """`options` checked and normalised (None values pass: "not given"); raises BadKeyword / UnknownKeyword."""
    unknown = sorted(set(options) - set(KEYWORDS))
    if unknown:
        valid = ", ".join(sorted(KEYWORDS))
        raise UnknownKeyword(f"unknown keyword {unknown[0]!r}; valid keywords: {valid}", keyword=unknown[0], valid=valid)
    out = {}
    for key, value in options.items():
        spec = KEYWORDS[key]
        if value is None:
            out[key] = value
            continue
        if key in LISTS:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                value = [value]
            elif isinstance(value, (tuple, set, frozenset)):
                value = list(value)
        if spec == PATH:
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise _fail(key, value, PATH)
            value = Path(value)
        elif spec == CALLABLE:
            if not callable(value):
                raise _fail(key, value, CALLABLE)
        elif spec == EXECUTOR:

            if not isinstance(value, (str, Executor)):
                raise _fail(key, value, EXECUTOR)
        elif isinstance(value, bool) and spec not in (FLAG,) or not jsonschema.Draft202012Validator(
                spec.schema).is_valid(value):
            raise _fail(key, value, spec.meaning)
        out[key] = value
    return out

