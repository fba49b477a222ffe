"""The Python API: `bench.evaluate(suite, **overrides) -> Results`.

    import bench
    res = bench.evaluate("digits", defenses=["ne-patch"], psnr=[20.0], releases=["float"], threads=1)
    res.rows            # one row per cell (pandas DataFrame; nested fields flattened, e.g. "metrics.top1")
    res.leaderboard     # the ranked board of the image protocols (DataFrame, or None)
    res.summary         # cells, forward passes, cache hits, wall time (RunSummary)

It runs exactly what `authbench run` runs (same engine, cache and results folder, so a notebook
and the CLI resume each other's runs) and renders the same reports. `executor="ray"` or
`"submitit"` (with the CLI's executor options as keywords: address, gpus_per_job, cpus_per_job,
max_in_flight, max_retries, partition, array_parallelism, time_limit, mem_gb, job_folder) runs the
jobs on workers, exactly as `authbench run --executor ...` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.core.context import EvalContext, RunOptions
from bench.core.engine import Engine, RunSummary
from bench.errors import UserError, check_folder
from bench.executors import Executor, executor_options, make_executor
from bench.protocols import render, summary_lines
from bench.reports.leaderboard import leaderboard, ranked_rows
from bench.results import read_rows
from bench.suite import Suite, load_suite
from bench.suite_overrides import apply_overrides


@dataclass(frozen=True, kw_only=True)
class Results:
    records: list[dict]  # the result rows as written (JSON objects)
    typed: tuple = ()  # the same rows as bench.core.types.Row
    summary: RunSummary
    reports: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> pd.DataFrame:
        return pd.json_normalize(self.records)

    @property
    def leaderboard(self) -> pd.DataFrame | None:
        ranked = ranked_rows(self.records)
        return leaderboard(ranked) if ranked else None

    def summary_text(self) -> str:
        """What `authbench run` prints: the boards (or the task tables), the counts, where things are."""
        parts = summary_lines(self.records, self.reports)  # each protocol's own (its boards or tables)
        s = self.summary
        parts.append(
            f"cells: {s.cells_total} total, {s.cells_done_before} already done, {s.cells_run} run | "
            f"forward passes: {s.forwards} | encodings: {s.encodings} | "
            f"cache hits {s.cache['hits']}, misses {s.cache['misses']}, corrupt {s.cache['corrupt']} | {s.wall_s:.1f}s"
            + (f" | executor {s.executor}" if s.executor != "local" else "")
            + (f" | {s.superseded} superseded" if s.superseded else "")
            + (f" | {s.merged} duplicate job(s) merged (identical parameters run once)" if s.merged else "")
            + (f"\nFAILED: {s.jobs_failed} job(s) did not finish (one line each above); `authbench run` again "
               "retries only them" if s.jobs_failed else ""))
        site = next((p for p in self.reports if p.name == "index.html"), None)
        parts.append(f"results: {s.results}\nreports: {self.reports[0].parent if self.reports else '-'}"
                     + (f"\nsite: {site}" if site else ""))
        return "\n\n".join(parts[:-1]) + "\n" + parts[-1]


def dataset_classes(suite: Suite, ctx: EvalContext | None = None) -> int | None:
    """The class count of the suite's evaluated split (labels only, no image is decoded), for chance lines;
    None where the data is not available here or has no classes (text and VLM suites). Best effort by
    design: whatever stops the labels from loading (missing files, a loader's own RuntimeError) means
    the figures draw no chance line, never that a report fails."""
    try:
        classes = int((ctx or EvalContext(suite)).data.num_classes)
    except Exception:  # noqa: BLE001  (see above: reports never fail for want of a chance line)
        return None
    return classes if classes > 1 else None


def engine_for(suite: Suite, *, out: Path | None = None, executor: Executor | str | None = None, **options) -> Engine:
    """The engine of a run: RunOptions from `options`, and the executor (an instance, or a name with the
    executor options among `options`, over the suite's [executor] section)."""
    known = executor_options(executor if isinstance(executor, str) else None)
    chosen = {k: options.pop(k) for k in list(options) if k in known}
    if not isinstance(executor, Executor):
        executor = make_executor(executor, suite.raw.get("executor"), **chosen)
    elif any(v is not None for v in chosen.values()):
        raise UserError("pass executor options with an executor name, not with an Executor instance")
    opts = RunOptions(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items() if v is not None})
    return Engine(suite, Path(out) if out else Path("runs") / suite.name, opts, executor)


def run_suite(suite: Suite, *, out: Path | None = None, reports: Path | None = None, write_reports: bool = True,
              executor: Executor | str | None = None, **options) -> Results:
    """Run `suite` (resuming from `out`, default runs/<suite>) and render its reports (default reports/<suite>)."""
    for flag, folder in (("--out", out), ("--reports", reports), ("--cache-dir", options.get("cache_dir"))):
        if folder is not None:
            check_folder(folder, flag)
    engine = engine_for(suite, out=out, executor=executor, **options)
    summary = engine.run()
    typed = read_rows(summary.results, typed=True)
    records = [r.to_json() for r in typed]
    paths = render(typed, Path(reports) if reports else Path("reports") / suite.name, suite.report,
                   suite.standard_attacks, site=True, classes=dataset_classes(suite, engine.ctx)) \
        if write_reports and records else []
    return Results(records=records, typed=tuple(typed), summary=summary, reports=paths)


def evaluate(suite: str | Path | Suite = "digits", *, subset: int | None = None, data_root: Path | None = None,
             random_weights: bool = False, progress: bool = False, **overrides) -> Results:
    """Run a suite (a shipped name, a .toml path or a loaded Suite) with the CLI's overrides as keywords:
    out, reports, write_reports, defenses (names or labels), models, authorized, evaluated, psnr, releases, full, batch_size, device, threads,
    cache_dir, loader, executor (a name or an Executor) and the executor options (address, gpus_per_job,
    cpus_per_job, max_in_flight, max_retries, partition, array_parallelism, time_limit, mem_gb, job_folder);
    subset, data_root and random_weights as `authbench run` has them."""
    loaded = suite if isinstance(suite, Suite) else load_suite(str(suite))
    loaded = apply_overrides(loaded, subset, data_root, random_weights)
    return run_suite(loaded, progress=progress, **overrides)
