"""The default executor: jobs one after another in this process."""

from __future__ import annotations

from bench.executors.base import EXECUTORS, Executor


@EXECUTORS.register
class LocalExecutor(Executor):
    name = "local"
    description = "run jobs one after another in this process (the default)"

    def map(self, fn, jobs):
        for job in jobs:
            yield fn(job)
