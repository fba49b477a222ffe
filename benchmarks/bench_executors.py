"""Local (one thread) vs Ray with N workers (one thread each) on one forward-heavy reduced suite, in one run.

    PYTHONPATH=. python benchmarks/bench_executors.py [--workers 2] [--subset 0] [--psnr 20 --psnr 0 ...] [--authorized 3]

The suite: the digits test split (540 images by default), the convolutional zoo models and two others (all
six evaluated, three authorized), the noise control and ne-patch at several PSNR points, float release: every job is
one encoding of the split and a forward pass of every model over it. Each run starts from an empty
forward/encoding cache (the zoo weights are copied in from $AUTHBENCH_CACHE, so training is not timed).

Printed, all measured in this one process run:
  local wall, ray wall and their ratio (the speedup);
  the time to start the local Ray and to warm its workers (import torch + authbench once per worker,
  as a long-running cluster has already done; not part of the ray wall);
  scheduling overhead per job: (workers x ray wall - sum of the time each job spent inside its worker,
  context rebuild included) / jobs, i.e. everything that is not a job running: submission, transfer
  of specs and rows, the driver's writes, idle workers at the tail;
  and the round trip of an empty task through the same executor (2 in flight, and one at a time).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.cache import cache_root
from bench.core.context import EvalContext, RunOptions
from bench.core.engine import Engine
from bench.executors.ray import RayExecutor
from bench.suite import load_suite

MODELS = ["zoo:cnn-s0", "zoo:cnn-s1", "zoo:resnet-s0", "zoo:resnet-s1", "zoo:mlp-s0", "zoo:vit-s0"]


def suite_file(folder: Path, subset: int, psnr: list[float], authorized: int) -> Path:
    path = folder / "bench-executors.toml"
    quoted = ", ".join(f'"{m}"' for m in MODELS)
    path.write_text(
        '[suite]\nname = "bench-executors"\nseed = 0\n\n'
        f'[data]\ndataset = "digits"\nsplit = "test"\nsubset = {subset}\n\n'
        f'[models]\nauthorized = [{", ".join(f"{chr(34)}{m}{chr(34)}" for m in MODELS[:authorized])}]\n'
        f"evaluated = [{quoted}]\n"
        + "".join(f'\n[[defenses]]\nname = "{d}"\npsnr = {psnr}\nrelease = ["float"]\n' for d in ("noise", "ne-patch")))
    return path


class Recording(RayExecutor):
    """The ray executor, keeping each job's result (its time inside the worker) for the overhead figure."""

    def __init__(self, **options):
        super().__init__(**options)
        self.results = []

    def map(self, fn, items):
        for out in super().map(fn, items):
            self.results += out if isinstance(out, list) else []
            yield out


def warm_worker(_):
    import bench.core.engine  # noqa: F401  (torch and authbench, once per worker process)

    return os.getpid()


def noop(_):
    return None


def spin(seconds_hint: int) -> float:
    """A fixed pure-Python CPU load; returns its wall time."""
    start = time.perf_counter()
    total = 0
    for i in range(seconds_hint * 4_000_000):
        total += i * i
    return time.perf_counter() - start


def parallel_ceiling(workers: int) -> float:
    """What `workers` processes can gain here right now: workers x (one load alone) / (`workers` loads at
    once). 2.0 on two idle cores; lower while other processes hold a core."""
    ctx = mp.get_context("fork")
    alone = spin(1)
    with ctx.Pool(workers) as pool:
        start = time.perf_counter()
        pool.map(spin, [1] * workers)
        together = time.perf_counter() - start
    return workers * alone / together


def fresh_cache(warm: Path, folder: Path) -> Path:
    """An empty cache root, with the zoo weights of `warm` when it has any (the digits zoo is pinned in the
    package, so usually there is no zoo folder to copy)."""
    folder.mkdir(parents=True)
    if (warm / "zoo").is_dir():
        shutil.copytree(warm / "zoo", folder / "zoo")
    return folder


class LocalRecording:
    """The local executor, keeping each job's own time (the per-job figure the worker's is compared with)."""

    name, remote = "local", False

    def __init__(self):
        from bench.executors.local import LocalExecutor

        self.inner, self.results = LocalExecutor(), []

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def map(self, fn, items):
        for out in self.inner.map(fn, items):
            self.results += out if isinstance(out, list) else []
            yield out


def job_in_worker_vs_local(suite, warm: Path, tmp: Path) -> list[tuple[float, float]]:
    """Each job of the suite run twice in this process, alternating: `execute` in a local engine's context, and
    `run_specs` on its spec in a warm worker context (the worker path without Ray's transport or a second
    process sharing the cores). Both from their own empty forward cache, models loaded before timing.
    Returns (local s, worker s) per job."""
    from bench.core.engine import execute, run_specs, worker_context

    local = Engine(suite, tmp / "inproc-local", RunOptions(cache_dir=fresh_cache(warm, tmp / "c-inproc-local"),
                                                           threads=1, progress=False))
    remote = Engine(suite, tmp / "inproc-worker", RunOptions(cache_dir=fresh_cache(warm, tmp / "c-inproc-worker"),
                                                             threads=1, progress=False))
    specs = [remote.spec(j) for j in remote.jobs]
    ctx, _ = worker_context(specs[0])  # warm: suite rebuilt, planned, models loaded (as after a worker's first job)
    for label in dict.fromkeys([*local.ctx.evaluated, *local.ctx.authorized]):
        local.ctx.model(label), ctx.model(label)
    out = []
    for i, (job, spec) in enumerate(zip(local.jobs, specs)):
        pair = {}
        for side in (("local", "worker") if i % 2 == 0 else ("worker", "local")):
            start = time.thread_time()
            if side == "local":
                execute(local.ctx, job)
            else:
                (res,) = run_specs((spec,))
                assert res.error is None, res.error
            pair[side] = time.thread_time() - start
        out.append((pair["local"], pair["worker"]))
    return out


def report_inproc(pairs: list[tuple[float, float]]) -> None:
    ratios = [w / l for l, w in pairs]
    print(f"a job on the worker path (run_specs, warm context) / the same job locally (execute), CPU, in this "
          f"process, {len(pairs)} jobs alternated: median {statistics.median(ratios):.3f} (target <= 1.10); "
          f"totals {sum(w for _, w in pairs):.2f} s / {sum(l for l, _ in pairs):.2f} s; per-job fixed cost of the "
          f"worker path {statistics.median(w - l for l, w in pairs) * 1e3:+.1f} ms (median)")


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subset", type=int, default=0, help="test images (0 = the whole split, 540)")
    parser.add_argument("--psnr", type=float, action="append", help="PSNR points (default 40 30 20 10 0 -10 -20)")
    parser.add_argument("--authorized", type=int, default=3, help="authorized models (groups)")
    parser.add_argument("--repeats", type=int, default=1, help="local / ray pairs, alternated (medians reported)")
    parser.add_argument("--empty-tasks", type=int, default=200)
    parser.add_argument("--inproc-only", action="store_true",
                        help="only the per-job comparison worker path vs local, in this process (no Ray)")
    args = parser.parse_args()
    psnr = args.psnr or [40.0, 30.0, 20.0, 10.0, 0.0, -10.0, -20.0]
    if args.inproc_only:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            suite = load_suite(str(suite_file(tmp, args.subset, psnr, args.authorized)))
            report_inproc(job_in_worker_vs_local(suite, cache_root(), tmp))
        return
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = load_suite(str(suite_file(tmp, args.subset, psnr, args.authorized)))
        warm = cache_root()  # the zoo weights live there, as for any `authbench run`
        ctx = EvalContext(suite, RunOptions(cache_dir=warm, threads=1, progress=False))
        for label in ctx.evaluated:  # trains the zoo models on first use (not timed)
            ctx.model(label)

        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        start = time.perf_counter()
        pids = set(RayExecutor(max_in_flight=args.workers).map(warm_worker, range(4 * args.workers)))
        warm_s = time.perf_counter() - start
        empty = {}
        for flight in (args.workers, 1):
            start = time.perf_counter()
            n = args.empty_tasks if flight > 1 else args.empty_tasks // 4
            list(RayExecutor(max_in_flight=flight).map(noop, range(n)))
            empty[flight] = (time.perf_counter() - start) / n * 1e3

        local_walls, ray_walls, ceilings, overheads, inside_medians, local_jobs, inside_all = [], [], [], [], [], [], []
        for rep in range(args.repeats):
            ceilings.append(parallel_ceiling(args.workers))
            opts = RunOptions(cache_dir=fresh_cache(warm, tmp / f"c-local{rep}"), threads=1, progress=False)
            recorder = LocalRecording()
            start = time.perf_counter()
            local = Engine(suite, tmp / f"local{rep}", opts, recorder).run()
            local_walls.append(time.perf_counter() - start)
            local_jobs += [r.wall_s for r in recorder.results]

            executor = Recording(cpus_per_job=1)
            opts = RunOptions(cache_dir=fresh_cache(warm, tmp / f"c-ray{rep}"), threads=1, progress=False)
            start = time.perf_counter()
            remote = Engine(suite, tmp / f"ray{rep}", opts, executor).run()
            ray_walls.append(time.perf_counter() - start)
            inside = sum(r.wall_s for r in executor.results)
            overheads.append((args.workers * ray_walls[-1] - inside) / max(remote.jobs_run, 1) * 1e3)
            inside_medians.append(statistics.median(r.wall_s for r in executor.results) * 1e3)
            inside_all += [r.wall_s for r in executor.results]
            ceilings.append(parallel_ceiling(args.workers))
        ray.shutdown()
        inproc = job_in_worker_vs_local(suite, warm, tmp)

    med = statistics.median
    local_wall, ray_wall = med(local_walls), med(ray_walls)
    print(f"suite: digits test split ({args.subset or 'all'} images), {len(MODELS)} models evaluated, "
          f"{args.authorized} authorized, noise + ne-patch at {psnr} dB float: {local.jobs_run} jobs, "
          f"{local.cells_run} cells, {local.forwards} forward passes (local) / {remote.forwards} (ray)")
    print(f"local, 1 thread:              {local_wall:7.2f} s   (runs: {', '.join(f'{t:.1f}' for t in local_walls)})")
    print(f"ray, {args.workers} workers x 1 thread:    {ray_wall:7.2f} s   (runs: {', '.join(f'{t:.1f}' for t in ray_walls)})")
    print(f"speedup local/ray = {local_wall / ray_wall:.2f}x (target >= 1.7x); what {args.workers} processes could gain "
          f"on this machine meanwhile (pure CPU load, {args.workers} at once vs one): "
          f"{', '.join(f'{c:.2f}x' for c in ceilings)}")
    print(f"scheduling overhead: {med(overheads):.1f} ms per job (target < 50 ms): {args.workers} x ray wall - time "
          f"inside jobs, over {remote.jobs_run} jobs (median job {med(inside_medians):.0f} ms inside its worker, "
          f"{local_wall / max(local.jobs_run, 1) * 1e3:.0f} ms per job locally)")
    print(f"empty task round trip: {empty[args.workers]:.2f} ms per task with {args.workers} in flight, "
          f"{empty[1]:.2f} ms one at a time")
    print(f"ray start {init_s:.2f} s, worker warm-up (import torch + authbench in {len(pids)} workers) {warm_s:.2f} s "
          "(once per cluster; not in the ray wall)")
    # the fixed costs, apart from the speedup, and what they project for N free cores
    job_local, job_worker = med(local_jobs), med(inside_all)
    per_job = med(overheads) / 1e3
    print(f"fixed costs: ray start {init_s:.2f} s + worker warm-up {warm_s:.2f} s once per cluster; "
          f"{per_job * 1e3:.1f} ms scheduling per job (target < 50 ms)")
    print(f"a job inside a warm worker / the same jobs locally (medians): {job_worker * 1e3:.0f} ms / "
          f"{job_local * 1e3:.0f} ms = {job_worker / job_local:.2f} (target <= 1.10; on a loaded machine this "
          f"includes the share of the core the worker got)")
    jobs = max(local.jobs_run, 1)
    serial = sum(local_jobs) / max(args.repeats, 1)
    print("projection from these parts (cores free, jobs as long as locally, one batch of jobs per task):")
    for n in (2, 4, 8, 16):
        wall = serial / n + jobs * per_job / n + job_local  # the work, its scheduling, one job's tail
        print(f"  {n:>2} cores: {wall:6.2f} s vs {serial:.2f} s locally -> {serial / wall:.2f}x "
              f"(+ {init_s + warm_s:.1f} s once per cluster)")
    report_inproc(inproc)
    print(f"machine: {os.cpu_count()} CPU cores, shared with other processes; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
