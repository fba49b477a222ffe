"""Executors: where jobs run. One interface, `map(fn, jobs) -> iterator of results`, registered in
one registry (entry point `authbench.executors`); `local` runs them in this process."""

from bench.executors.base import EXECUTORS, Executor, get_executor
from bench.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "get_executor"]
