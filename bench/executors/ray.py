"""Ray: one Ray task per batch of jobs of one authorized model on a Ray cluster (or a local one), a bounded
number in flight.

    authbench run imagenet --executor ray --address auto --gpus-per-job 1

`ray.init(address=...)` joins a cluster (`auto`: the one `ray start --head` started on this
machine; `ray://host:10001`: a remote head); without an address, or when Ray is already
initialised in this process, it starts (or uses) a local one. Each job is a task with `num_cpus` /
`num_gpus` from `--cpus-per-job` / `--gpus-per-job` (or [executor]); Ray retries a task whose
worker died (`max_retries`, system failures only: an exception inside a job is reported, not
retried). At most `--max-in-flight` tasks are submitted at once (default: twice the jobs the
cluster fits), and `ray.wait` hands each result to the driver as it finishes. Workers are reused
across tasks, and each keeps its rebuilt context, so a worker loads each model once.
"""

from __future__ import annotations

import math
import socket

from bench.errors import UserError, install_hint
from bench.executors.base import EXECUTORS, Executor, Failure, Option, chunked

DEFAULT_RETRIES = 3  # Ray's own default for tasks
CONNECT_TIMEOUT = 5.0  # seconds an --address may take to accept a connection
# jobs of one authorized model per Ray task: one submission, one spec transfer and one result per batch
# (a worker dying loses at most this many jobs, which the next run redoes)
JOBS_PER_TASK = 4


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"the ray executor needs Ray: {install_hint('dist')} (or pip install 'ray>=2.9')") from None
    return ray


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@EXECUTORS.register
class RayExecutor(Executor):
    name = "ray"
    description = "Ray tasks (batches of jobs of one authorized model) on a Ray cluster (--address), or on a local Ray"
    remote = True
    options = (
        Option("address", "string", "the cluster to join (auto, host:port, ray://host:10001; default: a local Ray)"),
        Option("cpus_per_job", "number", "num_cpus per task (default 1); also the worker's torch threads unless "
               "--threads says", minimum=0, exclusive=True, default=1),
        Option("gpus_per_job", "number", "num_gpus per task (fractions allowed)", minimum=0),
        Option("max_in_flight", "integer", "tasks submitted at once (default: twice what the cluster fits)", minimum=1),
        Option("max_retries", "integer", "retries of a task whose worker died (default 3)", minimum=0,
               default=DEFAULT_RETRIES),
    )

    def __init__(self, **given):
        super().__init__(**given)
        self.address = None if self.address in (None, "", "local") else str(self.address)

    def tasks(self, jobs: list) -> list[list]:
        """Batches of up to JOBS_PER_TASK jobs of one authorized model (a worker loads its models once)."""
        return chunked(jobs, JOBS_PER_TASK)

    def threads_per_job(self) -> int:
        return max(1, int(self.cpus_per_job))

    def _in_flight(self, ray) -> int:
        if self.max_in_flight:
            return self.max_in_flight
        res = ray.cluster_resources()
        fits = [res.get("CPU", 1) / self.cpus_per_job]
        if self.gpus_per_job:
            fits.append(res.get("GPU", 0) / self.gpus_per_job)
        return max(1, 2 * math.floor(min(fits)))

    def check_reachable(self) -> None:
        """An --address host:port (or ray://host:port) that accepts no connection within CONNECT_TIMEOUT
        seconds is one line, not Ray's minutes of retries."""
        if not self.address or self.address == "auto":
            return
        where = self.address.split("://", 1)[-1].rsplit("/", 1)[0]
        host, sep, port = where.rpartition(":")
        if not sep or not port.isdigit():
            raise UserError(f"--address {self.address!r} is not host:port, ray://host:port or auto")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT).close()
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {self.address!r} within {CONNECT_TIMEOUT:g}s "
                            f"({type(exc).__name__}: {exc}); start one with `ray start --head` or check --address") from None

    def check_gpus(self, ray=None) -> None:
        """--gpus-per-job asks for GPUs: without a cluster, this machine must have them; on a cluster, the
        cluster must (else Ray waits forever for a GPU that never comes)."""
        if not self.gpus_per_job:
            return
        if ray is None:
            import torch

            have = torch.cuda.device_count()
            where = "this machine"
        else:
            have = ray.cluster_resources().get("GPU", 0)
            where = f"the Ray cluster at {self.address}"
        if have < self.gpus_per_job:
            raise UserError(f"--gpus-per-job {self.gpus_per_job:g} cannot be met: {where} has {have:g} GPU(s); drop "
                            "--gpus-per-job to run on CPUs, or pass --address of a cluster with GPUs")

    def map(self, fn, items):
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            self.check_reachable()
            if self.address is None:
                self.check_gpus()
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=True, logging_level="warning")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"cannot join the Ray cluster at {self.address or 'a new local Ray'}: {one_line(exc)}; "
                                "start one with `ray start --head` or pass --address host:port") from None
        try:
            self.check_gpus(ray)
        except UserError:
            if started:
                ray.shutdown()
            raise
        task = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job or 0,
                          max_retries=self.max_retries, retry_exceptions=False)(fn)
        queue, pending = iter(items), {}
        limit = self._in_flight(ray)

        def submit():
            for item in queue:
                pending[task.remote(item)] = item
                if len(pending) >= limit:
                    return

        try:
            submit()
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died past its retries, or could not start
                    result = Failure(item, one_line(exc))
                submit()
                yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()
