"""The executor interface and its registry."""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable, Iterator

from bench.registry import Registry

EXECUTORS = Registry("executor", "authbench.executors")


class Executor:
    name: ClassVar[str]
    description: ClassVar[str]

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        """fn(job) for every job, yielded as each finishes (order may differ from `jobs`)."""
        raise NotImplementedError


def get_executor(name: str, **options) -> Executor:
    return EXECUTORS.get(name)(**options)
