"""The `Protocol` plugin: how a family of defenses is planned, run and reported.

    plan(ctx, entry) -> [Job]        the jobs of one [[defenses]] entry of the suite
    baseline(ctx) -> [Job]           the suite's clean jobs (only for the suite's primary protocol)
    run(ctx, job) -> [Row]           measure one job; rows of cells already done may be skipped
    reports(rows, out, cfg) -> [Path] tables and figures of this protocol's rows

A protocol receives an `EvalContext` (bench.core.context), never the engine. Built-ins: input
(image input authorization: NE, noise control), model (CoreLocker, DP, FHE, ALGOSPEC), verify
(ownership verification: MFUE and its baselines), glue (NE on BERT/RoBERTa embeddings), mmbench
(NE on VLM vision towers through VLMEvalKit). A third party registers one through the
`authbench.protocols` entry point; a defense names its protocol once, in its `protocol` attribute.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import ClassVar

from bench.core.context import EvalContext
from bench.core.types import Job, Row
from bench.registry import Registry

PROTOCOLS = Registry("protocol", "authbench.protocols")


def grid(sweep: dict) -> list[dict]:
    """Every combination of the swept parameter values (one empty point when nothing is swept)."""
    return [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]


class Protocol:
    name: ClassVar[str]
    description: ClassVar[str]
    # the CLI filters a protocol honours besides --defense and --model
    filters: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def owns_suite(cls, suite) -> bool:
        """True when every entry of `suite` belongs to this protocol (e.g. a GLUE dataset)."""
        return False

    def baseline(self, ctx: EvalContext) -> list[Job]:
        return []

    def plan(self, ctx: EvalContext, entry) -> list[Job]:
        raise NotImplementedError

    def run(self, ctx: EvalContext, job: Job) -> list[Row]:
        raise NotImplementedError

    def reports(self, rows: list[dict], out: Path, cfg: dict) -> list[Path]:
        return []

    def data_identity(self, ctx: EvalContext) -> dict:
        """What the evaluated data is, for binding results to it (the suite's [data] section by default)."""
        return {"suite_data": ctx.suite.data}


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)()
