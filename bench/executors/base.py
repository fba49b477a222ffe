"""The executor interface, its registry, placement, and how a run picks its executor.

An executor runs tasks (lists of jobs) and yields each task's result as it finishes:

    tasks(jobs) -> [[Job, ...], ...]   placement: jobs sorted by `job.group` (the authorized model),
                                       chunked so that a worker loads each model once per chunk
    map(fn, items) -> iterator         fn(item) for every item, yielded as each finishes (any order);
                                       a task whose worker failed for good is yielded as a `Failure`

A `remote` executor receives `JobSpec`s (bench.core.spec) and the module-level worker function
(bench.core.engine.run_specs), never the engine or a model; `local` runs jobs in this process.
Each executor declares its options once (`options`, a tuple of `Option`): the CLI flags, the suite's
[executor] keys (bench.suite_schema) and the checks of their values are generated from it.
Third-party executors register under the `authbench.executors` entry point (or are named by path).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

from bench.errors import UserError
from bench.registry import Registry

EXECUTORS = Registry("executor", "authbench.executors")

_TYPE_WORDS = {"number": "a number", "integer": "a whole number", "string": "a string", "path": "a path"}


@dataclass(frozen=True)
class Option:
    """One option of an executor, declared once on its class (`Executor.options`): the suite's
    [executor] key, the `authbench run` flag (--name-with-dashes, unless `cli` is False), the
    bench.evaluate keyword, the JSON Schema of the key and the value check all come from it."""

    name: str
    type: str  # "number", "integer", "string" or "path"
    help: str  # the flag's help (without the executor's name: the CLI prefixes it)
    minimum: float | None = None  # numbers: the smallest valid value
    exclusive: bool = False  # numbers: > minimum rather than >= minimum
    choices: tuple = ()  # strings: the valid values
    default: Any = None  # the value when neither the suite nor the caller gives one
    cli: bool = True  # False: a suite-only key (no flag)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-") if self.cli else f"[executor] {self.name}"

    @property
    def meaning(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = _TYPE_WORDS[self.type]
        if self.minimum is not None:
            text += f" {'>' if self.exclusive else '>='} {self.minimum:g}"
        return text

    @property
    def schema(self) -> dict:
        if self.choices:
            return {"enum": list(self.choices)}
        if self.type in ("string", "path"):
            return {"type": "string"}
        out: dict = {"type": self.type}
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive else "minimum"] = self.minimum
        return out

    def check(self, value):
        """The validated value (None: the default), or one UserError line naming the flag."""
        if value is None:
            return self.default
        if self.choices:
            if value not in self.choices:
                raise UserError(f"{self.flag} must be {self.meaning}, got {value!r}")
            return value
        if self.type in ("string", "path"):
            return str(value)
        integer = self.type == "integer"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) \
            and (not integer or float(value).is_integer())
        if ok and self.minimum is not None:
            ok = value > self.minimum if self.exclusive else value >= self.minimum
        if not ok:
            raise UserError(f"{self.flag} must be {self.meaning}, got {value!r}")
        return int(value) if integer else value


def executor_options(extra: str | None = None) -> dict[str, list[tuple[str, Option]]]:
    """option name -> [(executor, its declaration), ...] over the registered executors (built-ins and
    installed plugins) and `extra` (an executor named by path, e.g. 'pkg.mod:MyExecutor')."""
    names = EXECUTORS.names()
    if extra and extra not in names:
        try:
            EXECUTORS.get(extra)
            names.append(extra)
        except UserError:
            pass  # reported where the executor is made
    out: dict[str, list[tuple[str, Option]]] = {}
    for name in names:
        try:
            cls = EXECUTORS.get(name)
        except UserError:
            continue  # a broken plugin: `authbench list executors` says why
        for option in getattr(cls, "options", ()):
            out.setdefault(option.name, []).append((name, option))
    return out


class _OptionFlags(Mapping):
    """option name -> its flag, over every registered executor's declared options."""

    def _all(self) -> dict[str, str]:
        return {name: decls[0][1].flag for name, decls in executor_options().items()}

    def __getitem__(self, key):
        return self._all()[key]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())


OPTION_FLAGS = _OptionFlags()


@dataclass(frozen=True)
class Failure:
    """A task that did not come back (its worker died past its retries, or could not start)."""

    item: Any
    message: str  # one line


def by_group(jobs: Iterable) -> list:
    """Jobs sorted by their group (stable: plan order within a group), the clean baseline's "" first."""
    return sorted(jobs, key=lambda j: j.group)


def chunked(jobs: Iterable, size: int) -> list[list]:
    """Placement: jobs sorted by group, then cut into chunks of at most `size` jobs of one group."""
    out = []
    for _, group in groupby(by_group(jobs), key=lambda j: j.group):
        group = list(group)
        out += [group[i:i + size] for i in range(0, len(group), max(1, size))]
    return out


class Executor:
    name: ClassVar[str]
    description: ClassVar[str]
    remote: ClassVar[bool] = False  # True: jobs leave this process as JobSpecs
    options: ClassVar[tuple[Option, ...]] = ()  # every option it takes, declared once

    def __init__(self, **given):
        """Each declared option from `given` (validated; None or absent: its default), as an attribute."""
        declared = {o.name: o for o in self.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise UserError(f"the {self.name} executor has no option {unknown[0]!r}; valid options: "
                            f"{', '.join(sorted(declared)) or '(none)'}")
        for option in self.options:
            setattr(self, option.name, option.check(given.get(option.name)))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(o.name for o in cls.options)

    out_dir: Path | None = None

    def bind(self, out_dir: Path) -> None:
        """Told the run's results folder before `map` (e.g. for a default job folder)."""
        self.out_dir = Path(out_dir)

    def tasks(self, jobs: list) -> list[list]:
        """Placement: one task per job, jobs of one authorized model consecutive."""
        return chunked(jobs, 1)

    def threads_per_job(self) -> int | None:
        """torch threads a worker uses when neither --threads nor [run] threads says."""
        return None

    def describe(self) -> str:
        """One line for --plan: the executor and its settings."""
        shown = {o.flag: getattr(self, o.name, None) for o in self.options}
        return self.name + "".join(f" {flag} {v}" for flag, v in shown.items() if v is not None)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        """fn(item) for every item, yielded as each finishes (order may differ from `items`)."""
        raise NotImplementedError


def get_executor(name: str, **options) -> Executor:
    return EXECUTORS.get(name)(**options)


def make_executor(name: str | None = None, section: dict | None = None, **given) -> Executor:
    """The run's executor: `name` (else the suite's [executor] name, else local) with the suite's
    [executor] settings that apply to it, overridden by `given` (CLI flags, bench.evaluate keywords).
    A given option the executor does not take is an error; a suite setting for another executor is
    skipped, so one suite file can carry both its Ray and its Slurm settings."""
    section = dict(section or {})
    name = name or section.pop("name", None) or "local"
    section.pop("name", None)
    cls = EXECUTORS.get(name)
    given = {k: v for k, v in given.items() if v is not None}
    known = executor_options(name)
    for key in given:
        if key not in known:
            raise UserError(f"unknown executor option {key!r}; valid options: {', '.join(sorted(known))}")
        if key not in cls.option_names():
            takers = [n for n, _ in known[key]]
            raise UserError(f"{known[key][0][1].flag} does not apply to the {name} executor"
                            + (f"; it is an option of {', '.join(takers)}" if takers else ""))
    opts = {k: v for k, v in section.items() if k in cls.option_names()}
    opts.update(given)
    return cls(**opts)
