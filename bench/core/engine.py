"""The one plan -> resume -> execute -> write loop.

`plan(ctx)` expands a suite into jobs through the protocols (bench.protocols); `Engine.run()`
reads the results folder, skips every job whose cells are already written, runs the others
through an executor (bench.executors) and appends each job's rows as it finishes, so a crash
loses at most the job in flight and a rerun resumes. Only this loop writes results.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bench.core.context import EvalContext, RunOptions
from bench.core.types import Job
from bench.errors import UserError
from bench.executors import Executor, LocalExecutor
from bench.protocols import get_protocol, primary_protocol, protocol_of
from bench.results import ResultWriter
from bench.suite import Suite

FILTERS = {"psnr": "--psnr", "release": "--release"}


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    cells_total: int
    cells_done_before: int
    cells_run: int
    jobs_total: int
    jobs_run: int
    forwards: int
    encodings: int
    cache: dict
    wall_s: float
    results: Path


def plan(ctx: EvalContext) -> list[Job]:
    """Every job of the suite, after the run's filters: the primary protocol's baseline first, then each entry's."""
    suite, options = ctx.suite, ctx.options
    names = [d.name for d in suite.defenses]
    for d in options.defenses:
        if d not in names:
            raise UserError(f"defense {d!r} is not in suite {suite.name!r}; valid choices: {', '.join(names)}")
    primary = primary_protocol(suite)
    for key, flag in FILTERS.items():
        if getattr(options, key if key == "psnr" else "releases") and key not in primary.filters:
            raise UserError(f"{flag} does not apply to {primary.name} suites; use --model or --defense to pick cells")
    jobs = primary.baseline(ctx)
    for entry in suite.defenses:
        if (options.defenses and entry.name not in options.defenses) or (entry.tier == "full" and not options.full):
            continue
        jobs += protocol_of(primary, entry).plan(ctx, entry)
    return jobs


class Engine:
    """A suite's run: its context, its jobs, and the loop that executes the missing ones."""

    def __init__(self, suite: Suite, out_dir: Path, options: RunOptions | None = None,
                 executor: Executor | None = None):
        self.out_dir = Path(out_dir)
        self.ctx = EvalContext(suite, options or RunOptions(), out_dir=self.out_dir)
        self.executor = executor or LocalExecutor()
        self.jobs = plan(self.ctx)

    def pending(self, rows: list[dict]) -> list[Job]:
        """Jobs with a cell not yet written; a job whose rows are known only when it runs is done once
        as many rows as it wrote (`job_rows`) carry its key."""
        saved = Counter(r["job"] for r in rows if r.get("job"))
        finished = {r["job"] for r in rows if r.get("job") and saved[r["job"]] >= r["job_rows"]}
        done = self.ctx.done
        return [j for j in self.jobs if (any(c not in done for c in j.cells) if j.cells else j.key not in finished)]

    def run_job(self, job: Job) -> list[dict]:
        return [row.to_json() for row in get_protocol(job.protocol).run(self.ctx, job)]

    def run(self) -> RunSummary:
        start = time.perf_counter()
        writer = ResultWriter(self.out_dir)
        rows = writer.rows()
        self.ctx.done = {r["cell"] for r in rows}
        todo = self.pending(rows)
        estimate = sum(len(j.cells) or 2 for j in todo) - sum(c in self.ctx.done for j in todo for c in j.cells)
        show = self.ctx.progress and sys.stderr.isatty()
        bar = tqdm(total=estimate, desc=f"{self.ctx.suite.name} cells", unit="cell", disable=not show)
        run = 0
        for i, new_rows in enumerate(self.executor.map(self.run_job, todo), 1):
            writer.append(new_rows)
            run += len(new_rows)
            bar.total = max(bar.total, run)
            bar.update(len(new_rows))
            if self.ctx.progress and not show:  # a log, not a bar, where stderr is not a terminal
                print(f"{self.ctx.suite.name}: job {i}/{len(todo)} done, {run} cells written", file=sys.stderr)
        bar.close()
        return RunSummary(
            cells_total=len(rows) + run, cells_done_before=len(rows), cells_run=run, jobs_total=len(self.jobs),
            jobs_run=len(todo), forwards=self.ctx.counters.forwards, encodings=self.ctx.counters.encodings,
            cache=self.ctx.forward_cache.stats.as_dict(), wall_s=time.perf_counter() - start, results=writer.path)
