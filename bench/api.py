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

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.core.cache import atomic_write_bytes, digest
from bench.engine.context import EvalContext, RunOptions
from bench.engine.engine import Engine, RunSummary
from bench.engine.rerun import RENDER_STAMP, counts_line
from bench.api_schema import check_keywords
from bench.data.base import stat_digest
from bench.core.errors import BadKeyword, UserError, check_folder, show
from bench.executors import Executor, executor_options, make_executor
from bench.protocols import render, summary_lines
from bench.core.provenance import versions
from bench.reports.boards import build_boards, glance, parse_standard
from bench.reports.leaderboard import leaderboard, ranked_rows
from bench.core.results import read_rows
from bench.suite import DEFAULT_SUITE, Suite, load_suite
from bench.suite_overrides import apply_overrides


@dataclass(frozen=True, kw_only=True)
class Results:
    records: list[dict]  # the result rows as written (JSON objects)
    typed: tuple = ()  # the same rows as bench.core.types.Row
    summary: RunSummary
    reports: list[Path] = field(default_factory=list)
    boards: list = field(default_factory=list)  # the like-for-like boards (bench.reports.boards.Board), ranked

    @property
    def rows(self) -> pd.DataFrame:
        return pd.json_normalize(self.records)

    @property
    def leaderboard(self) -> pd.DataFrame | None:
        ranked = ranked_rows(self.records)
        return leaderboard(ranked) if ranked else None

    def summary_head(self) -> str:
        """The boards' top rows, then each protocol's own summary lines (its tables, its facts)."""
        return "\n\n".join([glance(b) for b in self.boards] + summary_lines(self.records, self.reports))

    def summary_tail(self) -> str:
        """Where the results, reports, boards and site are."""
        s = self.summary
        site = next((p for p in self.reports if p.name == "index.html"), None)
        full = next((p for p in self.reports if p.name == "boards.md"), None)
        return (f"results: {s.results}\nreports: {self.reports[0].parent if self.reports else '-'}"
                + (f"\nboards: {full} (every row and column)" if full else "")
                + (f"\nsite: {site}" if site else ""))

    def summary_text(self) -> str:
        """What `authbench run` prints: the boards (or the task tables), the counts, where things are."""
        s = self.summary
        line = counts_line(cells_total=s.cells_total, cells_done_before=s.cells_done_before, cells_run=s.cells_run,
                           forwards=s.forwards, encodings=s.encodings, cache=s.cache, wall_s=s.wall_s,
                           executor=s.executor, superseded=s.superseded, merged=s.merged, jobs_failed=s.jobs_failed)
        head = self.summary_head()
        return (head + "\n\n" if head else "") + line + "\n" + self.summary_tail()


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


def render_inputs(suite: Suite, results: Path) -> str:
    """The digest of everything a suite's reports are rendered from: the results file's bytes, the suite
    (its [report] and [standard_attacks] sections, its data: the chance line) and the harness version."""
    h = hashlib.sha256()
    with open(results, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    code = Path(__file__).resolve().parent  # the renderers' own files (an edited checkout renders again)
    sources = sorted(str(p.relative_to(code)) for d in ("reports", "protocols") for p in (code / d).glob("*.py"))
    return digest({"results": h.hexdigest(), "suite": suite.digest, "report": suite.report,
                   "standard_attacks": suite.standard_attacks, "version": versions().get("authbench", "unknown"),
                   "code": stat_digest(code, sources)})


def rendered_before(folder: Path, inputs: str) -> list[Path] | None:
    """The reports a previous render of these same inputs wrote into `folder`, when every one is still there."""
    try:
        stamp = json.loads((folder / RENDER_STAMP).read_text())
    except (OSError, ValueError):
        return None
    paths = [Path(p) for p in stamp.get("paths", [])] if isinstance(stamp, dict) else []
    return paths if stamp.get("inputs") == inputs and paths and all(p.exists() for p in paths) else None


def run_suite(suite: Suite, *, out: Path | None = None, reports: Path | None = None, write_reports: bool = True,
              executor: Executor | str | None = None, rerender: bool = False, check: bool = True,
              **options) -> Results:
    """Run `suite` (resuming from `out`, default runs/<suite>) and render its reports (default <out>/reports: a
    run never writes the checkout's shipped reports/ unless `reports` names that folder). The reports are rendered again only when what they are rendered from changed (rows, suite, version) or
    a report file is missing, or with `rerender` (`authbench run --render`). The keywords are checked first
    (bench.api_schema): a bad one raises BadKeyword, a UserError naming it (`check=False`: the command line,
    whose flags argparse and the engine check, in its own words)."""
    if check:
        checked = check_keywords({"out": out, "reports": reports, "write_reports": write_reports,
                                  "executor": executor, **options})
        out, reports, write_reports, executor = (checked.pop(k) for k in ("out", "reports", "write_reports",
                                                                          "executor"))
        options = checked
    for flag, folder in (("--out", out), ("--reports", reports), ("--cache-dir", options.get("cache_dir"))):
        if folder is not None:
            check_folder(folder, flag)
    engine = engine_for(suite, out=out, executor=executor, **options)
    summary = engine.run()
    typed = read_rows(summary.results, typed=True)
    records = [r.to_json() for r in typed]
    paths = []
    if write_reports and records:
        folder = Path(reports) if reports else engine.out_dir / "reports"
        inputs = render_inputs(suite, summary.results)
        paths = None if rerender else rendered_before(folder, inputs)
        if paths is None:
            paths = render(typed, folder, suite.report, suite.standard_attacks, site=True,
                           classes=dataset_classes(suite, engine.ctx))
            atomic_write_bytes(folder / RENDER_STAMP, json.dumps(
                {"inputs": inputs, "paths": [str(p) for p in paths]}, indent=1).encode())
    boards = build_boards(records, parse_standard(suite.standard_attacks)) if records else []
    return Results(records=records, typed=tuple(typed), summary=summary, reports=paths, boards=boards)


def evaluate(suite: str | Path | Suite = DEFAULT_SUITE, *, subset: int | None = None, data_root: Path | None = None,
             random_weights: bool = False, progress: bool = False, **overrides) -> Results:
    """Run a suite (a shipped name, a .toml path or a loaded Suite) with the CLI's overrides as keywords:
    out, reports, write_reports, defenses (names or labels), models, authorized, evaluated, psnr, releases, full, batch_size, device, threads,
    cache_dir, loader, executor (a name or an Executor) and the executor options (address, gpus_per_job,
    cpus_per_job, max_in_flight, max_retries, partition, array_parallelism, time_limit, mem_gb, job_folder), rerender
    (render the reports even when nothing they are rendered from changed);
    subset, data_root and random_weights as `authbench run` has them."""
    checked = check_keywords({"subset": subset, "data_root": data_root, "random_weights": random_weights,
                              "progress": progress, **overrides})
    subset, data_root, random_weights, progress = (checked.pop(k) for k in ("subset", "data_root", "random_weights",
                                                                             "progress"))
    if not isinstance(suite, (str, os.PathLike, Suite)):
        raise BadKeyword(f"suite={show(suite)} is not valid: it must be a suite name, a .toml path or a Suite",
                         keyword="suite", valid="a suite name, a .toml path or a Suite")
    loaded = suite if isinstance(suite, Suite) else load_suite(str(suite))
    loaded = apply_overrides(loaded, subset, data_root, bool(random_weights))
    return run_suite(loaded, progress=progress, **checked)
