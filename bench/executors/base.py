"""The executor interface, its registry, placement, and how a run picks its executor.

An executor runs tasks (lists of jobs) and yields each task's result as it finishes:

    tasks(jobs) -> [[Job, ...], ...]   placement: jobs sorted by `job.group` (the authorized model),
                                       chunked so that a worker loads each model once per chunk
    map(fn, items) -> iterator         fn(item) for every item, yielded as each finishes (any order);
                                       a task whose worker failed for good is yielded as a `Failure`

A `remote` executor receives `JobSpec`s (bench.core.spec) and the module-level worker function
(bench.core.engine.run_specs), never the engine or a model; `local` runs jobs in this process.
Third-party executors register under the `authbench.executors` entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

from bench.errors import UserError
from bench.registry import Registry

EXECUTORS = Registry("executor", "authbench.executors")

# every executor option a suite's [executor] section, the CLI or bench.evaluate may set, and its flag
OPTION_FLAGS = {
    "address": "--address", "gpus_per_job": "--gpus-per-job", "cpus_per_job": "--cpus-per-job",
    "max_in_flight": "--max-in-flight", "max_retries": "--max-retries", "partition": "--partition",
    "array_parallelism": "--array-parallelism", "time_limit": "--time-limit", "mem_gb": "--mem-gb",
    "job_folder": "--job-folder", "cluster": "[executor] cluster",
}


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


def positive(name: str, value, *, integer: bool = False, zero: bool = False):
    """A validated numeric option (one-line error naming its flag)."""
    if value is None:
        return None
    flag = OPTION_FLAGS.get(name, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (not integer or float(value).is_integer())
    if not ok or value < 0 or (value == 0 and not zero) or math.isnan(value):
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{flag} must be {kind} {'>= 0' if zero else '> 0'}, got {value!r}")
    return int(value) if integer else value


class Executor:
    name: ClassVar[str]
    description: ClassVar[str]
    remote: ClassVar[bool] = False  # True: jobs leave this process as JobSpecs
    options: ClassVar[tuple[str, ...]] = ()  # the OPTION_FLAGS keys this executor takes

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
        shown = {k: getattr(self, k, None) for k in self.options}
        return self.name + "".join(f" {OPTION_FLAGS[k]} {v}" for k, v in shown.items() if v is not None)

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
    for key in given:
        if key not in OPTION_FLAGS:
            raise UserError(f"unknown executor option {key!r}; valid options: {', '.join(sorted(OPTION_FLAGS))}")
        if key not in cls.options:
            takers = [n for n in EXECUTORS.names() if key in getattr(EXECUTORS.get(n), "options", ())]
            raise UserError(f"{OPTION_FLAGS[key]} does not apply to the {name} executor"
                            + (f"; it is an option of {', '.join(takers)}" if takers else ""))
    opts = {k: v for k, v in section.items() if k in cls.options}
    opts.update(given)
    return cls(**opts)
