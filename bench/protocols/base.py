"""The `Protocol` plugin: how a family of defenses is planned, run and reported.

    plan(ctx, entry) -> [Job]        the jobs of one [[defenses]] entry (its own entry dataclass)
    baseline(ctx) -> [Job]           the suite's clean jobs (only for the suite's primary protocol)
    run(ctx, job) -> [Measurement]   measure one job; the engine makes the rows and their provenance
    reports(rows, out, cfg) -> [Path] tables and figures of this protocol's rows
    summary(rows, reports) -> [str]  what `authbench run` prints for them

and declares on the class its entry dataclass, run filters, boards and ranking, `check` cells and
metrics, owned [data] keys and whether it reads clean rows (the class attributes below).

A protocol receives an `EvalContext` (bench.core.context), never the engine. Built-ins: input
(image input authorization: NE, noise control), model (CoreLocker, DP, FHE, ALGOSPEC), verify
(ownership verification: MFUE and its baselines), glue (NE on BERT/RoBERTa embeddings), mmbench
(NE on VLM vision towers through VLMEvalKit). A third party registers one through the
`authbench.protocols` entry point; a defense names its protocol once, in its `protocol` attribute.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, replace
from pathlib import Path
from typing import ClassVar

from bench.attacks import attack_label, get_attack
from bench.cache import digest
from bench.core.context import EvalContext
from bench.core.declared import PROTOCOLS as DECLARED_PROTOCOLS
from bench.core.declared import declare
from bench.core.entry import Entry, Key, parse_entry
from bench.core.types import Job, Measurement

PROTOCOLS = DECLARED_PROTOCOLS  # one registry of protocols (bench.core.declared), built-ins register below


def grid(sweep: dict) -> list[dict]:
    """Every combination of the swept parameter values (one empty point when nothing is swept)."""
    return [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]


def with_cells(ctx: EvalContext, job: Job) -> Job:
    """`job` with the keys of its cells, one per evaluated model (cells known when planned)."""
    label = attack_label(job.attack)
    cells = tuple(job.cell(e, suite=ctx.suite.name, attack_label=label).key(data=ctx.suite.data, seed=ctx.suite.seed)
                  for e in job.evaluated)
    return replace(job, cells=cells)


def with_key(ctx: EvalContext, job: Job, *, summary_cell: bool = False) -> Job:
    """`job` keyed by its cell with no evaluated model (its rows are known only when it runs; `summary_cell`:
    its summary row's cell is the key itself, so the job is done once that row is written)."""
    key = job.cell("", suite=ctx.suite.name, attack_label=attack_label(job.attack)).key(
        data=ctx.suite.data, seed=ctx.suite.seed)
    return replace(job, key=key, cells=(key,) if summary_cell else ())


def trials_for(ctx: EvalContext, entry, cls, attack) -> int:
    """The entry's `trials`, raised to the suite's [check] trials where the defense or the attack trains at
    run time (`Plugin.trains`): the reference records those cells' spread over trials (bench.reports.reference)."""
    trials = entry.trials
    if cls.trains or get_attack(attack).trains:  # [check] trials is a whole number >= 1: the suite schema checks it
        trials = max(entry.trials, ctx.suite.check.get("trials", 1))
    cap = getattr(ctx.options, "trials", None)  # --trials N: the cheap ranking mode (trial 0's cells are the same)
    return min(trials, cap) if cap is not None else trials


def entry_jobs(ctx: EvalContext, protocol: str, entry, cls, *, release: str, check_attack=None,
               summary_cell: bool = False) -> list[Job]:
    """One keyed job per (sweep point, authorized model, trial, attack) of a [[defenses]] entry whose rows are
    known when it runs (model authorization, ownership); `check_attack(entry)` validates the attacks first."""
    jobs = []
    for sweep_point in grid(entry.sweep):
        params = cls(**{**entry.params, **sweep_point}).params  # validates, fills defaults
        jobs += [with_key(ctx, Job(protocol=protocol, defense=entry.name, params=params, point=dict(sweep_point),
                                   release=release, attack=attack, authorized=auth, trial=trial, group=auth),
                          summary_cell=summary_cell)
                 for auth in ctx.authorized_for(entry)
                 for trial in range(max((trials_for(ctx, entry, cls, a) for a in entry.attacks), default=0))
                 for attack in entry.attacks if trial < trials_for(ctx, entry, cls, attack)]
    return jobs


class Protocol:
    """A family of defenses: how its entries are planned, run, scored, ranked and checked. Everything
    protocol-specific is declared here, on the class; nothing outside bench/protocols/ names a protocol.
    Defining a subclass with a `name` records its declarations (bench.core.declared)."""

    name: ClassVar[str]
    description: ClassVar[str]

    # -- the suite ------------------------------------------------------------------------------
    entry: ClassVar[type[Entry]] = Entry  # the keys its [[defenses]] entries may hold (any other: an error)
    entries: ClassVar[dict[str, type[Entry]]] = {}  # defense name -> its entry dataclass, where it differs
    # run filters it honours besides --defense and --model: RunOptions field -> the entry field it selects
    filters: ClassVar[dict[str, str]] = {}
    primary: ClassVar[bool] = False  # the protocol of a suite no protocol owns (its clean baseline runs first)
    owns_dataset: ClassVar[str | None] = None  # a suite on this [data] dataset belongs to it entirely
    data_keys: ClassVar[dict[str, Key]] = {}  # the [data] keys of the dataset it owns
    image_models: ClassVar[bool] = False  # its models load through the context (checked before the first job)

    # -- rows, reports, boards, check --------------------------------------------------------------
    uses_clean_rows: ClassVar[bool] = False  # its reports also read the other protocols' clean rows
    legacy_release: ClassVar[str | None] = None  # rows written before rows named it: their `release`
    ranked: ClassVar[bool] = False  # its rows are on the leaderboard (leaderboard.json, rank by attacked_gap)
    board: ClassVar[str | None] = None  # the board its rows rank on (bench.reports.boards); None: its name
    boards: ClassVar[dict] = {}  # board name -> BoardSpec of the boards its rows (or its defenses') rank on
    check_board: ClassVar[str | None] = None  # the board `check` compares its cells on (None: not checked)
    check_metrics: ClassVar[dict[str, str]] = {}  # metric -> "higher" | "lower" (its [check] tolerance keys)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            declare(cls)

    @classmethod
    def owns_suite(cls, suite) -> bool:
        """True when every entry of `suite` belongs to this protocol (its dataset is `owns_dataset`)."""
        return cls.owns_dataset is not None and suite.data.get("dataset") == cls.owns_dataset

    @classmethod
    def claims_legacy_row(cls, row: dict) -> str | None:
        """This protocol's name for a row written before rows named their protocol, else None."""
        if cls.owns_dataset is not None and row.get("benchmark") == cls.owns_dataset:
            return cls.name
        if cls.legacy_release is not None and row.get("release") == cls.legacy_release:
            return cls.name
        return None

    @classmethod
    def check_cells(cls, rows: list[dict]) -> list[tuple[str, str, float, bool]]:
        """(row key, metric, value, trains at run time) of every measured cell of its `check_board`, from the
        rows of every protocol sharing that board."""
        return []

    def entry_type(self, defense: str) -> type[Entry]:
        return self.entries.get(defense, self.entry)

    def parse_entry(self, suite, entry) -> Entry:
        """A suite's [[defenses]] entry (bench.suite.DefenseEntry) as this protocol's entry dataclass: a key it
        does not read is a one-line error."""
        return parse_entry(self.entry_type(entry.name), entry.raw, index=entry.index, protocol=self.name,
                           where=str(suite.path))

    def baseline(self, ctx: EvalContext) -> list[Job]:
        return []

    def plan(self, ctx: EvalContext, entry) -> list[Job]:
        raise NotImplementedError

    def run(self, ctx: EvalContext, job: Job) -> list[Measurement]:
        """Measure one job: one Measurement per cell (the engine builds the rows and their provenance)."""
        raise NotImplementedError

    def reports(self, rows: list[dict], out: Path, cfg: dict) -> list[Path]:
        return []

    def summary(self, rows: list[dict], reports: list[Path]) -> list[str]:
        """What `authbench run` prints for this protocol's rows (its boards or tables), before the counts."""
        return []

    def merge_key(self, ctx: EvalContext, job: Job) -> str:
        """Jobs of one merge key measure the same cells: the engine runs the first only. By default, the same
        cell keys (or job key); a protocol may also merge parameters that resolve to the same thing."""
        if job.key or job.cells:
            return digest([job.protocol, job.key, list(job.cells)])
        return digest([asdict(replace(job, extra={k: v for k, v in job.extra.items() if k != "label"}))])

    def data_identity(self, ctx: EvalContext) -> dict:
        """What the evaluated data is, for binding results to it (the suite's [data] section by default)."""
        return {"suite_data": ctx.suite.data}


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)()
