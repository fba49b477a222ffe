"""Executors: where jobs run. One interface (bench.executors.base): `tasks(jobs)` places jobs in
tasks by authorized model, `map(fn, tasks)` yields each task's result as it finishes; one
registry (entry point `authbench.executors`). Built-ins: `local` (this process, the default),
`ray` (Ray tasks on a cluster or a local Ray) and `submitit` (Slurm job arrays, or submitit's
local executor). Ray and submitit are imported only when used (`pip install 'authbench[dist]'`)."""

from bench.executors.base import (EXECUTORS, OPTION_FLAGS, Executor, Failure, Option, executor_options, get_executor,
                                  make_executor)
from bench.executors.local import LocalExecutor
from bench.executors import ray, submitit  # noqa: E402,F401  (registers them; imports neither Ray nor submitit)

__all__ = ["EXECUTORS", "OPTION_FLAGS", "Executor", "Failure", "LocalExecutor", "Option", "executor_options",
           "get_executor", "make_executor"]
