"""The one plan -> resume -> execute -> write loop, on this machine or on workers.

`plan(ctx)` expands a suite into jobs through the protocols (bench.protocols); `Engine.run()`
reads the results folder, skips every job whose cells are already written, hands the others to
an executor (bench.executors: local, ray, submitit) in tasks placed by authorized model, and
appends each job's rows as it comes back, so a crash loses at most the jobs in flight and a rerun
resumes. Only this loop writes results, whatever the executor: a remote worker receives a small
`JobSpec` (bench.engine.spec), rebuilds the context (`run_specs`, once per process and suite), runs
the job and returns its rows and counters; the driver drops any row whose cell is already
written, so a retried task never duplicates one.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections import Counter, OrderedDict
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench import allocator
from bench.engine.context import EvalContext, RunOptions
from bench.engine.spec import JobResult, JobSpec, environment, job_id, job_label, suite_toml
from bench.core.cache import digest
from bench.core import provenance
from bench.attacks import attack_label
from bench.attacks.base import ATTACKS
from bench.core.forward import Usage
from bench.core.types import RESULTS_VERSION, Job, Measurement, Provenance, Role, Row
from bench.core.errors import UserError
from bench.models.adapter import on_device
from bench.executors import Executor, Failure, make_executor
from bench.protocols import get_protocol, primary_protocol, protocol_of
from bench.core.provenance import versions
from bench.core.results import ResultWriter, latest, read_rows, results_path
from bench.suite import Suite, load_suite
from bench.suite_schema import check_data_options

FLAGS = {"psnr": "--psnr", "releases": "--release"}  # the run filters a protocol may honour (Protocol.filters)
CACHE_COUNTERS = ("hits", "misses", "corrupt")


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    cells_total: int
    cells_done_before: int
    cells_run: int
    jobs_total: int
    jobs_run: int
    forwards: int  # summed over workers
    encodings: int
    cache: dict
    wall_s: float
    results: Path
    jobs_failed: int = 0
    failures: tuple[str, ...] = ()  # one line per failed task (its worker died past its retries)
    executor: str = "local"
    superseded: int = 0  # rows kept in the file but not reused: written for another model, data or version
    merged: int = 0  # planned jobs left out because an earlier one measures the same cells (identical entries)
    complete: bool = False  # every planned job done after this run (a rerun would run nothing)


def plan(ctx: EvalContext) -> list[Job]:
    """Every job of the suite, after the run's filters: the primary protocol's baseline first, then each entry's
    (parsed into its protocol's entry dataclass: a key that protocol does not read is an error)."""
    suite, options = ctx.suite, ctx.options
    check_data_options(suite.data, str(suite.path))  # again, now that the protocols (and their [data] keys) are loaded
    names = list(dict.fromkeys([d.name for d in suite.defenses] + [d.label for d in suite.defenses if d.label]))
    for d in options.defenses:
        if d not in names:
            raise UserError(f"defense {d!r} is not in suite {suite.name!r}; valid choices (names or labels): "
                            f"{', '.join(names)}")
    primary = primary_protocol(suite)
    for option, flag in FLAGS.items():
        if getattr(options, option) and option not in primary.filters:
            raise UserError(f"{flag} does not apply to {primary.name} suites; use --model or --defense to pick cells")
    jobs = primary.baseline(ctx)
    baseline = len(jobs)
    chosen = [e for e in suite.defenses if (not options.defenses or e.name in options.defenses or e.label in options.defenses)
              and (e.tier != "full" or options.full)]
    entries = []
    for e in chosen:
        protocol = protocol_of(primary, e)
        entries.append((protocol.parse_entry(suite, e), protocol))
    check_filters(suite, options, entries)
    for entry, protocol in entries:
        planned = protocol.plan(ctx, entry)
        jobs += [replace(j, extra={**j.extra, "label": entry.label}) for j in planned] if entry.label else planned
    if (options.defenses or any(getattr(options, o) for o in FLAGS)) and len(jobs) == baseline:
        raise UserError(f"the filters ({describe_filters(options)}) select no defense cell of suite {suite.name!r}"
                        + ("" if options.full else "; entries of tier 'full' need --full"))
    return jobs


def merge_duplicates(ctx: EvalContext, jobs: list[Job]) -> tuple[list[Job], int]:
    """The jobs with every job that measures the same as an earlier one left out (two entries that resolve to the
    same parameters: one run, one row per cell; `Protocol.merge_key`), and how many were left out."""
    seen, out = set(), []
    for job in jobs:
        key = get_protocol(job.protocol).merge_key(ctx, job)
        if key in seen:
            continue
        seen.add(key)
        out.append(job)
    return out, len(jobs) - len(out)


def describe_filters(options: RunOptions) -> str:
    parts = [f"--defense {d}" for d in options.defenses] + [f"--model {m}" for m in options.models]
    parts += [f"--authorized {m}" for m in options.authorized] + [f"--evaluated {m}" for m in options.evaluated]
    parts += [f"--psnr {p:g}" for p in options.psnr] + [f"--release {r}" for r in options.releases]
    return " ".join(parts)


def check_filters(suite, options: RunOptions, entries: list) -> None:
    """Each run filter's values (--psnr, --release: `Protocol.filters`) must select a cell of the entries the run
    plans (else the run would silently compute only the clean rows): one line naming the values the suite has."""
    for option, flag in FLAGS.items():
        values = getattr(options, option)
        if not values:
            continue
        offered = list(dict.fromkeys(v for e, protocol in entries if option in protocol.filters
                                     for v in getattr(e, protocol.filters[option])))
        for value in values:
            if value not in offered:
                shown = f"{value:g}" if isinstance(value, float) else value
                have = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in offered) or "(none)"
                scope = " (of the defenses chosen)" if options.defenses else ""
                raise UserError(f"{flag} {shown} selects no cell of suite {suite.name!r}; valid choices{scope}: {have}")


def model_outputs(model, data) -> int | None:
    """How many outputs (logits) an image model gives, from one image of `data`; None when it cannot say."""
    import torch

    try:
        with torch.no_grad():
            logits = model.predict(data.read([0]))
    except Exception:  # noqa: BLE001 - the run reports a model that cannot run; this check only counts outputs
        return None
    return int(logits.shape[-1]) if getattr(logits, "ndim", 0) == 2 else None


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute(ctx: EvalContext, job: Job, key: str = "", where: str = "") -> JobResult:
    """Run one job in `ctx`: its rows as JSON dicts (built here from the protocol's measurements), and what
    it cost (forward passes, encodings, cache counters)."""
    before, start = ctx.forwards.usage(), time.perf_counter()
    with on_device(ctx.device):  # every model loader and training step of the job uses the run's device
        measured = list(get_protocol(job.protocol).run(ctx, job))
    spent = ctx.forwards.usage().minus(before)
    rows = [row.to_json() for row in job_rows(ctx, job, measured, spent, time.perf_counter() - start)]
    return JobResult(job=key or job_id(job), rows=rows, forwards=spent.forwards, encodings=spent.encodings,
                     cache=spent.cache, wall_s=time.perf_counter() - start, worker=where)


def job_rows(ctx: EvalContext, job: Job, measured: list[Measurement], spent: Usage, wall_s: float) -> list[Row]:
    """Every measurement of `job` as a Row with one uniform Provenance: the job's wall time, forward passes and
    cache counters (per-job deltas), the device the run used, the trial's seed. A cell is the job's cell of the
    measurement's evaluated model: its planned key, else `<job key>:<evaluated>` (the job's summary row: the
    job key). Cells already written (`ctx.done`) are left out; a keyed job's rows carry `job` and `job_rows`."""
    planned = dict(zip(job.evaluated, job.cells)) if job.cells else {}
    label = attack_label(job.attack)
    seed, where = ctx.seed(job.trial), provenance.device(ctx.device)
    keyed = {"job": job.key, "job_rows": len(measured)} if job.key and not planned else {}
    named = {"label": job.extra["label"]} if job.extra.get("label") else {}
    rows = []
    for m in measured:
        if not isinstance(m, Measurement):
            raise UserError(f"protocol {job.protocol!r} returned {type(m).__name__}, not a Measurement "
                            "(bench.core.types.Measurement); the engine builds rows")
        role = m.role.value if isinstance(m.role, Role) else str(m.role)
        cell_key = planned.get(m.evaluated) or (job.key if role == Role.SUMMARY.value else f"{job.key}:{m.evaluated}")
        if cell_key in ctx.done:  # a job cut off mid-write, or rerun for its other cells: keep the rows saved
            continue
        prov = Provenance(model_digest=m.model_digest, authorized_digest=m.authorized_digest, input_digest=m.input_digest,
                          defense_summary=m.defense_summary, versions=versions(), git=provenance.git_revision(),
                          device=where, seed=seed, wall_s=wall_s, cache=spent.cache, forwards=spent.forwards)
        rows.append(Row.build(protocol=job.protocol, cell=job.cell(m.evaluated, suite=ctx.suite.name, attack_label=label),
                              key=cell_key, suite_digest=ctx.suite.digest, role=role, arch=m.arch, metrics=m.metrics,
                              encoding=m.encoding, attack_stats=m.attack_stats, cost=m.cost, n=m.n, provenance=prov,
                              extra={**m.columns, **keyed, **named}))
    return rows


# -- the worker side ------------------------------------------------------------------------------
KEEP_CONTEXTS = 2  # contexts (suites x options) a worker process keeps, with their loaded models
_CONTEXTS: OrderedDict[str, tuple[EvalContext, dict[str, Job]]] = OrderedDict()


def options_of(data: dict) -> RunOptions:
    known = {f.name for f in fields(RunOptions)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
    if values.get("cache_dir"):
        values["cache_dir"] = Path(values["cache_dir"])
    return RunOptions(**values)


def worker_context(spec: JobSpec) -> tuple[EvalContext, dict[str, Job]]:
    """The context and planned jobs for `spec`, built once per process and (suite, options): a worker
    that runs several jobs of a run loads each model, split and fitted defense once."""
    if spec.context_key in _CONTEXTS:
        _CONTEXTS.move_to_end(spec.context_key)
        ctx, jobs = _CONTEXTS[spec.context_key]
        ctx.out_dir = Path(spec.out_dir)  # the same suite and data, maybe another run's folder (artifacts go there)
        return ctx, jobs
    mine = versions().get("authbench", "unknown")
    if spec.version != mine:
        raise UserError(f"the driver runs authbench {spec.version}, this worker {mine}; install one version everywhere")
    os.environ.update(spec.env)
    sys.path.extend(p for p in spec.sys_path if p not in sys.path and os.path.exists(p))
    if spec.cwd and os.path.isdir(spec.cwd) and os.getcwd() != spec.cwd:
        os.chdir(spec.cwd)  # relative data roots and checkpoints resolve as on the driver (shared storage)
    ctx = EvalContext(spec.suite(), options_of(spec.options), out_dir=Path(spec.out_dir))
    _CONTEXTS[spec.context_key] = (ctx, {job_id(j): j for j in merge_duplicates(ctx, plan(ctx))[0]})
    while len(_CONTEXTS) > KEEP_CONTEXTS:
        _CONTEXTS.popitem(last=False)
    return _CONTEXTS[spec.context_key]


def run_specs(specs: tuple[JobSpec, ...]) -> list[JobResult]:
    """The worker entry point (a Ray task, a submitit array task): run each job of a chunk and return
    its rows and counters. A job's error comes back as a one-line result (its traceback goes to the
    worker's log), so the other jobs of the chunk still return; a dead process is the executor's to retry."""
    out, where = [], _where()
    for spec in specs[:1]:
        os.environ.update({k: v for k, v in spec.env.items() if k == allocator.ENV})
    allocator.tune()  # a worker process is an entry point too (once per process)
    for i, spec in enumerate(specs, 1):
        print(f"authbench worker {where}: job {i}/{len(specs)} {spec.job} {spec.label}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            ctx, jobs = worker_context(spec)
            if spec.job not in jobs:
                raise UserError(f"job {spec.job} ({spec.label}) is not in suite {spec.suite_name!r} as planned on the "
                                "worker; driver and worker must run the same authbench and suite")
            ctx.done = set(spec.done)
            result = execute(ctx, jobs[spec.job], spec.job, where)
            out.append(JobResult(**{**result.__dict__, "wall_s": time.perf_counter() - start}))
        except UserError as exc:
            out.append(JobResult(job=spec.job, error=str(exc), user_error=True, worker=where))
        except Exception as exc:  # noqa: BLE001 - reported to the driver as one line
            traceback.print_exc()
            text = " ".join(str(exc).split())[:300]
            out.append(JobResult(job=spec.job, error=f"{type(exc).__name__}: {text}", worker=where,
                                 wall_s=time.perf_counter() - start))
    return out


class _Clock:
    """A run's timing lines: the estimated total once the first jobs are done (5% of them, at least 3, and
    10 s), then, off a terminal, one progress line a minute (jobs, cells, elapsed, estimated time left)."""

    def __init__(self, jobs: int, on: bool, name: str):
        self.jobs, self.on, self.name = jobs, on, name
        self.start = self.last = time.perf_counter()
        self.estimated = False

    def tick(self, done: int, cells: int, *, minutely: bool) -> str | None:
        if not self.on or not done:
            return None
        now = time.perf_counter()
        elapsed = now - self.start
        left = elapsed * (self.jobs - done) / done
        if not self.estimated and done < self.jobs and done >= max(3, self.jobs // 20) and elapsed >= 10:
            self.estimated, self.last = True, now
            return (f"authbench: estimated time {_clock(elapsed + left)} in all ({_clock(left)} left, from the first "
                    f"{done} job(s); jobs differ in cost, so this moves)")
        if minutely and (now - self.last >= 60 or done == self.jobs):
            self.last = now
            return (f"{self.name}: {done}/{self.jobs} jobs, {cells} cells written, {_clock(elapsed)} elapsed"
                    + (f", ~{_clock(left)} left" if done < self.jobs else ""))
        return None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


# -- the driver -----------------------------------------------------------------------------------
class Engine:
    """A suite's run: its context, its jobs, and the loop that executes the missing ones."""

    def __init__(self, suite: Suite, out_dir: Path, options: RunOptions | None = None,
                 executor: Executor | None = None):
        allocator.tune()  # once per process: the CLI, bench.evaluate and notebooks all build an Engine
        self.out_dir = Path(out_dir)
        self.ctx = EvalContext(suite, options or RunOptions(), out_dir=self.out_dir)
        self.executor = executor or make_executor(None, suite.raw.get("executor"))
        for folder in suite.import_path[1:]:
            if not folder.is_dir():
                raise UserError(f"suite {suite.name!r}: [models] python_path folder {str(folder)!r} does not exist; "
                                "give folders relative to the suite file")
        self.jobs, self.merged = merge_duplicates(self.ctx, plan(self.ctx))

    def row_identity(self, row: dict) -> str:
        """What a row's numbers depend on: the identities of its models (spec, recipe or checkpoint digest, init
        seed), the data's (the [data] section and the split's content), the suspect zoo's settings and the
        results version. A row is reused on resume only when it matches (rows written before rows carried it
        are reused as they are)."""
        if not hasattr(self, "_identities"):
            self._identities = {"data": primary_protocol(self.ctx.suite).data_identity(self.ctx),
                                "suspects": self.ctx.suite.raw.get("suspects"), "version": RESULTS_VERSION,
                                **self.ctx.compute}  # autocast / channels-last rows are not float32 rows
            self._models: dict[str, dict] = {}
        labels = sorted({row.get("authorized"), row.get("evaluated")} & set(self.ctx.specs))
        for label in labels:
            if label not in self._models:
                self._models[label] = self.ctx.model_identity(label)
        # an attack whose default output changed carries a version (bench.attacks.base.Attack.version): rows written
        # under the old default are not this row (version 1, the unversioned default, adds nothing)
        name = str(row.get("attack") or "none").split("(", 1)[0]
        version = getattr(ATTACKS.get(name), "version", 1) if name in ATTACKS else 1
        extra = {"attack_version": version} if version != 1 else {}
        return digest({**self._identities, **extra, "models": {label: self._models[label] for label in labels}})[:24]

    def suite_source(self) -> dict:
        """The suite file this run read and its digest as read (rows record them: `report` and `check` apply
        its [report] / [check] sections without --suite); nothing for a suite with no file."""
        if not hasattr(self, "_suite_source"):
            path = Path(self.ctx.suite.path)
            self._suite_source = {}
            if path.is_file():
                try:
                    self._suite_source = {"suite_path": str(path.resolve()),
                                          "suite_file_digest": load_suite(str(path)).digest}
                except UserError:  # the file changed under the run: record nothing rather than a wrong digest
                    pass
        return self._suite_source

    def refuse_other_suites(self, rows: list[dict], where) -> None:
        """A results folder holds one suite's rows: rows of another suite there are refused (their reports
        would mix the two) unless the run allows it (`--allow-mixed`)."""
        if self.ctx.options.allow_mixed:
            return
        others = sorted({str(r.get("suite")) for r in rows} - {self.ctx.suite.name})
        if others:
            named = ", ".join(repr(o) for o in others[:3]) + (f" (+{len(others) - 3} more)" if len(others) > 3 else "")
            raise UserError(f"{where} holds rows of suite {named}, not {self.ctx.suite.name!r}; give this run its own "
                            "--out folder, or pass --allow-mixed to add its rows there")

    def current(self, rows: list[dict]) -> tuple[list[dict], int]:
        """The rows a resumed run reuses (one per cell, bound to today's identity) and how many it supersedes."""
        keep = [r for r in rows
                if (r.get("provenance") or {}).get("identity") in (None, self.row_identity(r))]
        return latest(keep)[0], len(rows) - len(keep)

    def check_models(self, jobs: list[Job]) -> None:
        """Load every image model the jobs name before the first runs (they stay loaded for the run), and
        report every bad spec at once, in one line, instead of failing in the job that first needs it."""
        if not primary_protocol(self.ctx.suite).image_models:
            return  # protocols with their own loaders (text, VLM) load their models per task
        labels = list(dict.fromkeys(l for j in jobs for l in (j.authorized, *j.evaluated) if l in self.ctx.specs))
        data = self.ctx.data  # a data error is said once, not once per model
        classes = int(data.labels.max()) + 1 if len(data.labels) else 0
        bad = []
        for label in labels:
            try:
                model = self.ctx.model(label)
                if model.preprocess.input_size[0] != data.shape[0]:
                    bad.append(f"{label}: expects inputs of shape {tuple(model.preprocess.input_size)} (any height and "
                               f"width) but the data has {tuple(data.shape)}")
                    continue
                outputs = model_outputs(model, data)
                if outputs is not None and outputs < classes:
                    bad.append(f"{label}: has {outputs} outputs but the data's labels go up to {classes - 1} "
                               f"({classes} classes); give a model with one output per class of {data.name!r}")
            except UserError as exc:
                bad.append(f"{label}: {exc}")
        if bad:
            more = f"; (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise UserError(f"{len(bad)} of {len(labels)} model spec(s) cannot run, nothing was started: "
                            + "; ".join(bad[:3]) + more)

    def data_digest(self) -> str:
        """A digest of the evaluated data's identity (rows record it: `rank` and `check` compare it)."""
        if not hasattr(self, "_data_digest"):
            self._data_digest = digest(primary_protocol(self.ctx.suite).data_identity(self.ctx))[:24]
        return self._data_digest

    def pending(self, rows: list[dict]) -> list[Job]:
        """Jobs with a cell not yet written; a job whose rows are known only when it runs is done once
        as many rows as it wrote (`job_rows`) carry its key."""
        saved = Counter(r["job"] for r in rows if r.get("job"))
        finished = {r["job"] for r in rows if r.get("job") and saved[r["job"]] >= r["job_rows"]}
        done = self.ctx.done
        return [j for j in self.jobs if (any(c not in done for c in j.cells) if j.cells else j.key not in finished)]

    def run_jobs(self, jobs: list[Job]) -> list[JobResult]:
        """A task of the local executor: its jobs in this process, one after another."""
        return [execute(self.ctx, job, where="local") for job in jobs]

    def spec(self, job: Job, rows_of: dict[str, set] | None = None) -> JobSpec:
        """The self-contained record a remote worker runs `job` from (no model, no tensor)."""
        ctx, suite = self.ctx, self.ctx.suite
        if ctx.options.loader is not None:
            raise UserError(f"a custom model loader cannot be sent to {self.executor.name} workers; "
                            "use the local executor, or name the models in the suite")
        if not hasattr(self, "_spec_base"):
            options = {}
            for f in fields(RunOptions):
                value = getattr(ctx.options, f.name)
                options[f.name] = list(value) if isinstance(value, tuple) else value
            options.pop("loader", None)
            options.update(progress=False, cache_dir=str(Path(ctx.cache_root).resolve()))
            if options.get("threads") is None and suite.run.get("threads") is None:
                options["threads"] = self.executor.threads_per_job()
            self._spec_base = dict(
                suite_name=suite.name, suite_file=Path(suite.path).name, suite_toml=suite_toml(suite),
                suite_digest=suite.digest, options=options, out_dir=str(self.out_dir.resolve()),
                version=versions().get("authbench", "unknown"), cwd=os.getcwd(),
                sys_path=tuple(p for p in sys.path if p), env=environment())
        done = {c for c in job.cells if c in ctx.done} | set((rows_of or {}).get(job.key, ()) if job.key else ())
        return JobSpec(job=job_id(job), label=job_label(job), done=tuple(sorted(done)), **self._spec_base)

    def run(self) -> RunSummary:
        try:
            with ResultWriter(self.out_dir) as writer:  # one run per results folder at a time
                return self._run(writer)
        finally:
            self.ctx.restore_threads()  # --threads applies to this run, not to the rest of the process

    def _run(self, writer: ResultWriter) -> RunSummary:
        start = time.perf_counter()
        self.refuse_other_suites(writer.rows(), writer.path)
        rows, superseded = self.current(writer.rows())
        if superseded and self.ctx.options.progress:
            print(f"authbench: {superseded} row(s) in {writer.path} were written for another model, data or harness "
                  "version: kept in the file, not reused", file=sys.stderr)
        written = {r["cell"] for r in rows}
        self.ctx.done = set(written)
        todo = self.pending(rows)
        estimate = sum(len(j.cells) or 2 for j in todo) - sum(c in written for j in todo for c in j.cells)
        executor = self.executor
        if not executor.remote:
            self.check_models(todo)
        executor.bind(self.out_dir)
        tasks = executor.tasks(todo)
        if executor.remote:
            rows_of: dict[str, set] = {}
            for r in rows:
                if r.get("job"):
                    rows_of.setdefault(r["job"], set()).add(r["cell"])
            items, fn = [tuple(self.spec(j, rows_of) for j in task) for task in tasks], run_specs
        else:
            items, fn = tasks, self.run_jobs
        labels = {job_id(j): job_label(j) for j in todo}
        jobs_by_id = {job_id(j): j for j in todo}
        show = self.ctx.progress  # a terminal (EvalContext); elsewhere one line per minute
        say = self.ctx.options.progress
        if say:
            print(self.header(todo, estimate), file=sys.stderr)
        clock = _Clock(len(todo), say and bool(todo), self.ctx.suite.name)
        bar = tqdm(total=estimate, desc=f"{self.ctx.suite.name} cells", unit="cell", disable=not show)
        run, done_jobs, failures, received = 0, 0, [], set()
        counts = Counter(forwards=0, encodings=0, **{k: 0 for k in CACHE_COUNTERS})

        def fail(line: str) -> None:
            failures.append(line)
            (bar.write if show else lambda s: print(s, file=sys.stderr))(f"authbench: {line}")

        results = executor.map(fn, items) if items else iter(())  # nothing to run: start no cluster
        try:
            for out in results:
                if isinstance(out, Failure):
                    jobs = [s.job if isinstance(s, JobSpec) else job_id(s) for s in out.item]
                    fail(f"task of {len(jobs)} job(s) ({labels.get(jobs[0], jobs[0])}"
                         f"{', ...' if len(jobs) > 1 else ''}) failed: {out.message}")
                    continue
                for res in out:
                    if res.job in received:  # the same job delivered twice (a task retried after it returned)
                        continue
                    if res.error:
                        if res.user_error:
                            raise UserError(res.error)
                        fail(f"job {labels.get(res.job, res.job)} failed on {res.worker}: {res.error}")
                        continue
                    received.add(res.job)
                    new = [r for r in res.rows if r["cell"] not in written]  # one writer: never a duplicate row
                    label = (jobs_by_id.get(res.job).extra.get("label") if res.job in jobs_by_id else "") or ""
                    for r in new:
                        r["provenance"].update(identity=self.row_identity(r), data_identity=self.data_digest(),
                                               **self.suite_source())
                        if label:
                            r["label"] = label
                    writer.append(new)
                    written.update(r["cell"] for r in new)
                    run += len(new)
                    done_jobs += 1
                    counts.update(forwards=res.forwards, encodings=res.encodings, **res.cache)
                    bar.total = max(bar.total, run)
                    bar.update(len(new))
                    bar.set_postfix_str(f"jobs {done_jobs}/{len(todo)}" + (f", {len(failures)} failed" if failures else ""))
                    line = clock.tick(done_jobs, run, minutely=say and not show)  # the estimate once, then a log
                    if line:                                                        # line a minute off a terminal
                        (bar.write if show else lambda t: print(t, file=sys.stderr))(line)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # cancels what is still in flight
            bar.close()
        return RunSummary(
            cells_total=len(rows) + run, cells_done_before=len(rows), cells_run=run, jobs_total=len(self.jobs),
            jobs_run=done_jobs, forwards=counts["forwards"], encodings=counts["encodings"],
            cache={k: counts[k] for k in CACHE_COUNTERS}, wall_s=time.perf_counter() - start, results=writer.path,
            jobs_failed=len(todo) - done_jobs, failures=tuple(failures), executor=executor.name, superseded=superseded,
            merged=self.merged, complete=done_jobs == len(todo) and not failures and received >= set(labels)
            and all(c in written for j in todo for c in j.cells))

    def header(self, todo: list[Job], cells: int) -> str:
        """What a run prints first: suite, what is left to run, device, threads, executor, where results go."""
        ctx, unknown = self.ctx, sum(not j.cells for j in todo)
        left = (f"{len(todo)} of {len(self.jobs)} job(s) to run, {cells} cell(s)"
                + (f" (+ the cells of {unknown} job(s) known when they run)" if unknown else "")) if todo else \
            f"all {len(self.jobs)} job(s) done: nothing to run"
        threads = (f"{ctx.threads} torch thread(s) ({ctx.threads_source})" if ctx.threads is not None
                   else f"{torch.get_num_threads()} torch thread(s) ({ctx.threads_source})")
        return (f"authbench: suite {ctx.suite.name}: {left}\n"
                f"authbench: device {ctx.device}, {threads}, executor {self.executor.name}; "
                f"results: {results_path(self.out_dir)}")

    # -- the plan, without running --------------------------------------------------------------
    def describe(self) -> str:
        """What `authbench run --plan` prints: jobs, their groups and tasks, and the estimated forward passes."""
        path = results_path(self.out_dir)
        every = read_rows(path, all_rows=True, require=("cell",)) if path.exists() else []
        self.refuse_other_suites(every, path)
        rows = self.current(every)[0]
        self.ctx.done = {r["cell"] for r in rows}
        todo = self.pending(rows)
        if not self.executor.remote:
            self.check_models(todo)  # the plan names only models that load
        self.executor.bind(self.out_dir)
        tasks = self.executor.tasks(todo)
        cells = [c for j in todo for c in j.cells if c not in self.ctx.done]
        unknown = sum(not j.cells for j in todo)

        def forwards(job: Job) -> int:  # one pass over the split per evaluated model still to score
            return sum(c not in self.ctx.done for c in job.cells) if job.cells else max(1, len(job.evaluated))

        suite = self.ctx.suite
        lines = [f"plan: suite {suite.name} (digest {suite.digest}), executor {self.executor.describe()}",
                 f"jobs: {len(self.jobs)} planned, {len(self.jobs) - len(todo)} done, {len(todo)} to run in "
                 f"{len(tasks)} task(s); cells to run: {len(cells)}"
                 + (f" (+ {unknown} job(s) whose cells are known when they run)" if unknown else ""),
                 *([f"merged: {self.merged} job(s) measure the same cells as an earlier entry's and run once"]
                   if self.merged else []),
                 f"estimated forward passes: {sum(map(forwards, todo))} (cold cache; every cache hit is one less)",
                 "", f"{'group (authorized model)':<28} {'jobs':>5} {'cells':>6} {'forwards':>9} {'tasks':>6}"]
        groups: dict[str, list[Job]] = {}
        for job in todo:
            groups.setdefault(job.group, []).append(job)
        for group in sorted(groups):
            members = groups[group]
            n_tasks = sum(1 for t in tasks if t and t[0].group == group)
            lines.append(f"{group or '(clean baseline)':<28} {len(members):>5} "
                         f"{sum(c not in self.ctx.done for j in members for c in j.cells):>6} "
                         f"{sum(map(forwards, members)):>9} {n_tasks:>6}")
        lines.append("")
        for i, task in enumerate(tasks, 1):
            lines.append(f"task {i}: group {task[0].group or '(clean baseline)'}, {len(task)} job(s)")
            lines += [f"  {job_id(j)}  {job_label(j)}  [{len(j.cells) or '?'} cell(s), ~{forwards(j)} forward(s)]"
                      for j in task]
        return "\n".join(lines)
