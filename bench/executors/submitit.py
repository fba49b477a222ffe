"""submitit: Slurm job arrays (or submitit's local executor where there is no Slurm).

    authbench run imagenet --executor submitit --partition gpu --gpus-per-job 1 --array-parallelism 32

`submitit.AutoExecutor` picks Slurm when `srun` is on the PATH, else its local executor (real
subprocesses on this machine); `[executor] cluster = "local" | "slurm"` forces one. The
Slurm parameters come from the CLI or [executor]: partition, gpus and cpus per job (one task per
array element), memory, time limit (minutes) and array parallelism. Jobs are sorted by authorized
model and cut into chunks so that there are about as many array tasks as can run at once (each
chunk holds jobs of one authorized model, so a task loads it once); the chunks are submitted as
one job array (`map_array`). The job folder (pickled specs, logs, results; default
`<results folder>/submitit`) must be on storage the nodes share, as must the cache.

A task that fails (a killed process, a node failure, an exception outside a job) is resubmitted
up to `--max-retries` times in the same run, then reported as one line; preempted tasks are
requeued by submitit (the task is checkpointable) and a later `authbench run` resumes whatever
is still missing, like any run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from bench.errors import UserError, install_hint
from bench.executors.base import EXECUTORS, Executor, Failure, Option, chunked

DEFAULT_TIME_LIMIT = 240  # minutes per array task
DEFAULT_RETRIES = 1
DEFAULT_SLURM_PARALLELISM = 32  # array tasks at once (and about as many chunks) unless --array-parallelism says
CLUSTERS = ("slurm", "local")


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(f"the submitit executor needs submitit: {install_hint('dist')} "
                        "(or pip install 'submitit>=1.5')") from None
    return submitit


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    tail = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[0] if lines else "")
    return f"{type(exc).__name__}: {tail[:300]}"


class SpecTask:
    """One array task: the worker function over a chunk of job specs. Checkpointable: when Slurm
    preempts it (or it reaches its time limit), submitit requeues it with the same chunk."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, item):
        return self.fn(item)

    def checkpoint(self, item):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, item)


@EXECUTORS.register
class SubmititExecutor(Executor):
    name = "submitit"
    description = "Slurm job arrays through submitit (its local executor where there is no Slurm)"
    remote = True
    options = (
        Option("partition", "string", "Slurm partition"),
        Option("gpus_per_job", "integer", "GPUs per array task", minimum=0),
        Option("cpus_per_job", "integer", "cpus_per_task of each array task (default 1); also the worker's torch "
               "threads unless --threads says", minimum=1, default=1),
        Option("mem_gb", "number", "memory per array task in GB", minimum=0, exclusive=True),
        Option("time_limit", "integer", f"minutes per array task (default {DEFAULT_TIME_LIMIT})", minimum=1,
               default=DEFAULT_TIME_LIMIT),
        Option("array_parallelism", "integer", "array tasks running at once (Slurm %N; local: subprocesses at once, "
               "default CPUs / --cpus-per-job)", minimum=1),
        Option("max_in_flight", "integer", "array tasks submitted at once", minimum=1),
        Option("max_retries", "integer", f"resubmissions of a failed task (default {DEFAULT_RETRIES})", minimum=0,
               default=DEFAULT_RETRIES),
        Option("job_folder", "path", "pickled specs, logs, results, on shared storage (default: <out>/submitit)"),
        Option("cluster", "string", "force submitit's Slurm or local executor (default: Slurm where srun exists)",
               choices=CLUSTERS, cli=False),
    )

    def __init__(self, **given):
        super().__init__(**given)
        self._chosen: str | None = None

    # -- placement -----------------------------------------------------------------------------
    def which(self) -> str:
        """The cluster submitit will use: the one asked for, else Slurm when srun exists, else local."""
        if self._chosen is None:
            self._chosen = self.cluster or import_submitit().AutoExecutor.which()
        return self._chosen

    def slots(self) -> int:
        """Array tasks that run at once."""
        if self.which() == "slurm":
            return self.array_parallelism or self.max_in_flight or DEFAULT_SLURM_PARALLELISM
        local = max(1, (os.cpu_count() or 1) // self.cpus_per_job)
        return self.max_in_flight or self.array_parallelism or local

    def tasks(self, jobs):
        """Jobs of one authorized model in chunks, about as many chunks as there are slots."""
        return chunked(jobs, max(1, math.ceil(len(jobs) / self.slots())))

    def threads_per_job(self) -> int:
        return self.cpus_per_job

    def describe(self) -> str:
        return super().describe().replace(self.name, f"{self.name} ({self.which()})", 1)

    # -- running -------------------------------------------------------------------------------
    def folder(self) -> Path:
        if self.job_folder:
            return Path(self.job_folder)
        return (self.out_dir or Path("runs")) / "submitit"

    def check_gpus(self) -> None:
        """--gpus-per-job on submitit's local executor: this machine must have the GPUs (else the tasks run on
        the CPU while the run says GPU). On Slurm the scheduler decides (a partition without GPUs is its error)."""
        if self.gpus_per_job and self.which() == "local":
            import torch

            have = torch.cuda.device_count()
            if have < self.gpus_per_job:
                raise UserError(f"--gpus-per-job {self.gpus_per_job} cannot be met: submitit runs locally here "
                                f"(no Slurm) and this machine has {have} GPU(s); drop --gpus-per-job, or run where "
                                "Slurm is")

    def executor(self):
        self.check_gpus()
        submitit = import_submitit()
        executor = submitit.AutoExecutor(folder=str(self.folder()), cluster=self.which())
        params = {"name": "authbench", "timeout_min": self.time_limit, "cpus_per_task": self.cpus_per_job,
                  "gpus_per_node": self.gpus_per_job or 0, "tasks_per_node": 1, "mem_gb": self.mem_gb}
        if self.which() == "slurm":
            params.update(slurm_partition=self.partition, slurm_array_parallelism=self.slots())
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor

    def map(self, fn, items):
        executor = self.executor()
        task = SpecTask(fn)
        items = list(items)
        slurm = self.which() == "slurm"
        limit = len(items) if slurm else self.slots()  # Slurm bounds an array itself; locally, bound it here
        queue = list(enumerate(items))
        attempts = {i: 0 for i, _ in queue}
        pending: dict = {}  # submitit job -> index

        def submit():
            take = queue[:max(0, limit - len(pending))]
            del queue[:len(take)]
            if not take:
                return
            jobs = executor.map_array(task, [item for _, item in take])  # one job array
            pending.update({job: i for job, (i, _) in zip(jobs, take)})

        try:
            submit()
            while pending:
                finished = [job for job in pending if job.done()]
                if not finished:
                    time.sleep(1.0 if slurm else 0.1)
                    continue
                for job in finished:
                    i = pending.pop(job)
                    try:
                        result = job.result()
                    except Exception as exc:  # killed, preempted past its requeues, node failure
                        attempts[i] += 1
                        if attempts[i] <= self.max_retries:
                            queue.insert(0, (i, items[i]))
                            continue
                        result = Failure(items[i], f"{one_line(exc)} (job {job.job_id}, logs in {self.folder()})")
                    submit()
                    yield result
                submit()
        finally:
            for job in pending:
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
