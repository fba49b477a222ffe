"""Command-line overrides of a loaded suite: `--subset N`, `--data-root PATH`, `--random-weights`.

Each override changes the suite's data or model specs (and its raw table, so the suite digest
and every cell key change with it). `--random-weights` also renames the suite to
`<name>-random-weights`, so its results (runs/<name>-random-weights) never mix with, or stand
in for, a pretrained run.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

from bench.core.errors import UserError
from bench.suite import Suite
from bench.suite_schema import validate

RANDOM_SOURCES = ("timm", "hf")


def random_weights_spec(spec):
    """The spec with random weights: pretrained = false, init_seed (default 0), no checkpoint."""
    if isinstance(spec, str):
        source, _, model = spec.partition(":")
        if source not in RANDOM_SOURCES:
            return spec
        spec = {"source": source, "model": model}
    if not isinstance(spec, dict) or spec.get("source") not in RANDOM_SOURCES:
        return spec
    out = {k: v for k, v in spec.items() if k != "checkpoint"}
    out["pretrained"] = False
    out.setdefault("init_seed", 0)
    return out


def apply_overrides(suite: Suite, subset: int | None = None, data_root: Path | None = None,
                    random_weights: bool = False) -> Suite:
    if subset is None and data_root is None and not random_weights:
        return suite
    raw = copy.deepcopy(suite.raw)
    data = raw.setdefault("data", {})
    name = suite.name
    if subset is not None:
        if subset < 0:
            raise UserError(f"--subset must be >= 0 (0 = the whole split), got {subset}")
        data["subset"] = int(subset)
    if data_root is not None:
        data["root"] = str(data_root)
    authorized, evaluated = list(suite.authorized), list(suite.evaluated)
    if random_weights:
        authorized = [random_weights_spec(s) for s in authorized]
        evaluated = [random_weights_spec(s) for s in evaluated]
        models = raw.setdefault("models", {})
        models["authorized"] = authorized
        if "evaluated" in models:
            models["evaluated"] = evaluated
        name = f"{suite.name}-random-weights"
        raw.setdefault("suite", {})["name"] = name
    flags = " ".join(f for f, v in (("--subset", subset), ("--data-root", data_root), ("--random-weights", random_weights))
                     if v not in (None, False))
    validate(raw, f"{suite.path} with {flags}")  # e.g. --data-root on a dataset that takes no root
    return replace(suite, name=name, data=data, authorized=authorized, evaluated=evaluated, raw=raw)
