"""Regression check: fresh results against a stored reference (bench.reports.reference), under tolerances.

Refuses (one-line UserError, exit 2) a run whose suite, suite digest or model set differs from the
reference's unless `allow_subset`; fails when nothing was compared. Outputs: text (one line per
moved cell), JSON, JUnit XML (one testcase per cell) and GitHub Actions annotations.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.core.cache import atomic_write_bytes
from bench.core.errors import UserError
from bench.core.declared import check_metrics
from bench.core.metrics import LEGACY_METRICS
from bench.reports.reference import Reference, Tolerances, load
from bench.paths import output_file
from bench.reports.identity import RunIdentity, differences

STATUSES = ("ok", "regression", "improvement", "missing", "not-measured")
FAILING = ("regression", "missing", "not-measured")


@dataclass(frozen=True, kw_only=True)
class CellOutcome:
    """One reference cell compared with the fresh run."""

    board: str
    key: str
    metric: str
    direction: str
    reference: float
    fresh: float | None
    tolerance: float
    trained: bool
    status: str  # one of STATUSES

    @property
    def line(self) -> str:
        if self.status == "missing":
            return f"{self.key}: in the reference, absent from the fresh results"
        if self.status == "not-measured":
            return f"{self.key} {self.metric}: reference {_fmt(self.reference)} -> fresh not measured"
        return (f"{self.key} {self.metric}: reference {_fmt(self.reference)} -> fresh {_fmt(self.fresh)} "
                f"(delta {self.fresh - self.reference:+.2f}, tolerance {self.tolerance:g}, "
                f"{self.direction} is better)")

    def to_json(self) -> dict:
        return {**asdict(self), "message": self.line}


def _fmt(v: float) -> str:
    return f"{v:.2f}" if abs(v) >= 1.5 else f"{v:.3f}"


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """Outcome of `check`: one CellOutcome per reference cell; `notes` say what was not like-for-like."""

    outcomes: tuple[CellOutcome, ...] = ()
    notes: tuple[str, ...] = ()
    strict: bool = False

    def _failing(self, o: CellOutcome) -> bool:
        return o.status in FAILING or (self.strict and o.status == "improvement")

    @property
    def compared(self) -> int:
        return sum(o.status not in ("missing",) for o in self.outcomes)

    @property
    def regressions(self) -> list[str]:
        return [o.line + (" [improvement; strict]" if o.status == "improvement" else "") for o in self.outcomes
                if o.status in ("regression", "not-measured") or (self.strict and o.status == "improvement")]

    @property
    def improvements(self) -> list[str]:
        return [] if self.strict else [o.line for o in self.outcomes if o.status == "improvement"]

    @property
    def missing(self) -> list[str]:
        return list(dict.fromkeys(o.line for o in self.outcomes if o.status == "missing"))

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not any(self._failing(o) for o in self.outcomes)

    def to_json(self) -> dict:
        return {"kind": "authbench-check", "ok": self.ok, "compared": self.compared,
                "regressions": len(self.regressions), "missing": len(self.missing),
                "improvements": len(self.improvements), "notes": list(self.notes),
                "cells": [{**o.to_json(), "failed": self._failing(o)} for o in self.outcomes]}


def like_for_like(fresh: Reference, reference: Reference) -> list[str]:
    """What differs between the runs behind `fresh` and `reference` (suite, suite digest, model set)."""
    out = differences(RunIdentity.from_json(fresh.identity), RunIdentity.from_json(reference.identity),
                      parts=("data",))  # other images, split or subset: refused unless --allow-subset
    if fresh.suite_digest and reference.suite_digest and fresh.suite_digest != reference.suite_digest:
        out.append(f"suite digest {fresh.suite_digest[:12]} vs the reference's {reference.suite_digest[:12]}")
    if fresh.models is not None and reference.models is not None and set(fresh.models) != set(reference.models):
        lacks, extra = sorted(set(reference.models) - set(fresh.models)), sorted(set(fresh.models) - set(reference.models))
        parts = ([f"lacks {', '.join(lacks[:5])}{' ...' if len(lacks) > 5 else ''}"] if lacks else []) + (
            [f"has extra {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"] if extra else [])
        out.append(f"model set ({len(fresh.models)} vs {len(reference.models)} models: {'; '.join(parts)})")
    return out


def unlike_runs(fresh: Reference, reference: Reference) -> list[str]:
    """What makes two runs incomparable cell by cell, --allow-subset or not: another suite name, other weights
    for a model label (where both sides record them; bench.reports.identity)."""
    out = []
    if fresh.suite and reference.suite and fresh.suite != reference.suite:
        out.append(f"suite {fresh.suite!r} vs the reference's {reference.suite!r}")
    out += differences(RunIdentity.from_json(fresh.identity), RunIdentity.from_json(reference.identity),
                       parts=("weights",))
    return out


def check(fresh: Reference, reference: Reference, *, strict: bool = False, allow_subset: bool = False,
          override: dict[str, float] | None = None, override_default: float | None = None) -> CheckResult:
    """Compare every reference cell with the fresh one. A move in the worse direction by more than the
    cell's tolerance is a regression; in the better direction an improvement (a regression when `strict`).
    A reference cell absent from fresh is missing (skipped, as a note, under `allow_subset`). `override`
    (metric -> points) and `override_default` replace the reference's recorded tolerances."""
    override = dict(override or {})
    for what, value in [("--default-tolerance", override_default), *((f"--tolerance {k}", v) for k, v in override.items())]:
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UserError(f"{what} = {value!r} is not a tolerance: it must be a finite number of points >= 0, e.g. 1.0")
    override = {LEGACY_METRICS.get(k, k): v for k, v in override.items()}  # auth_gap: attacked_gap
    known = check_metrics()
    unknown = sorted(set(override) - set(known))
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)} in tolerances; valid: {', '.join(known)}")
    unlike = unlike_runs(fresh, reference)
    if unlike:  # another suite, other data or other weights: never comparable, --allow-subset or not
        raise UserError(f"fresh results and reference are not runs of the same thing: {'; '.join(unlike)}; compare "
                        "a run of the reference's suite on its data and models")
    differs = like_for_like(fresh, reference)
    if differs and not allow_subset:
        raise UserError(f"fresh results and reference differ: {'; '.join(differs)}; compare runs of the same suite "
                        "and models, or pass --allow-subset to compare the cells both hold")
    notes = [f"not like-for-like (--allow-subset): {d}" for d in differs]
    if reference.source == "leaderboard":
        notes.append("legacy leaderboard.json reference: no model set or trial spread recorded; rebuild it with "
                     "`authbench leaderboard freeze`")
    new = {(c.board, c.key, c.metric): c for c in fresh.cells}
    rows_held = {(c.board, c.key) for c in fresh.cells}
    outcomes, skipped = [], 0
    for c in reference.cells:
        tol = override.get(c.metric, c.tolerance if override_default is None else override_default)
        base = dict(board=c.board, key=c.key, metric=c.metric, direction=c.direction, reference=c.value,
                    tolerance=float(tol), trained=c.trained)
        got = new.get((c.board, c.key, c.metric))
        if got is None:
            if allow_subset:
                skipped += 1
                continue
            status = "not-measured" if (c.board, c.key) in rows_held else "missing"
            outcomes.append(CellOutcome(**base, fresh=None, status=status))
            continue
        gain = (got.value - c.value) if c.direction == "higher" else (c.value - got.value)
        status = "regression" if gain < -tol else "improvement" if gain > tol else "ok"
        outcomes.append(CellOutcome(**base, fresh=got.value, status=status))
    if skipped:
        notes.append(f"{skipped} reference cell(s) absent from the fresh results were skipped (--allow-subset)")
    compared = sum(o.status != "missing" for o in outcomes)
    if compared == 0:  # after the identity checks, nothing compared is a mistake in the inputs, not a result
        why = ("the reference holds no cells (no ranked board: a run of defense 'none' only?)" if not reference.cells
               else f"none of the reference's {len(reference.cells)} cells is in the fresh results"
               + (f" ({skipped} skipped under --allow-subset)" if skipped else ""))
        raise UserError(f"nothing to compare: {why}; check a run of the reference's suite that holds its boards")
    return CheckResult(outcomes=tuple(outcomes), notes=tuple(notes), strict=strict)


def format_check(result: CheckResult) -> str:
    """Human-readable summary, one line per moved cell."""
    verdict = "OK" if result.ok else ("FAIL (nothing compared)" if result.compared == 0 else "FAIL")
    lines = [f"compared {result.compared} cells: {len(result.regressions)} regression(s), "
             f"{len(result.missing)} missing row(s), {len(result.improvements)} improvement(s) -> {verdict}"]
    lines += [f"  note: {n}" for n in result.notes]
    for title, items in (("REGRESSION", result.regressions), ("MISSING", result.missing),
                         ("improved", result.improvements)):
        lines += [f"  {title}: {item}" for item in items]
    return "\n".join(lines)


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one testcase per reference cell (classname board.key, name metric)."""
    failures = sum(result._failing(o) for o in result.outcomes)
    suite = ET.Element("testsuite", name="authbench check", tests=str(max(len(result.outcomes), 1)),
                       failures=str(failures + (result.compared == 0)), errors="0", skipped="0")
    for o in result.outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"{o.board}.{o.key}", name=o.metric)
        if result._failing(o):
            ET.SubElement(case, "failure", message=o.line, type=o.status).text = o.line
        else:
            ET.SubElement(case, "system-out").text = o.line
    if not result.outcomes or result.compared == 0:
        case = ET.SubElement(suite, "testcase", classname="authbench.check", name="compared cells")
        ET.SubElement(case, "failure", message="compared 0 cells", type="empty").text = "nothing was compared"
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_annotations(result: CheckResult) -> str:
    """GitHub Actions workflow commands: an ::error per failing cell, a ::notice or ::error summary."""
    lines = [f"::error title=authbench check::{_escape(o.line)}" for o in result.outcomes if result._failing(o)]
    summary = format_check(result).splitlines()[0]
    lines.append(f"::{'notice' if result.ok else 'error'} title=authbench check::{_escape(summary)}")
    return "\n".join(lines)


def write_junit(result: CheckResult, path: Path) -> None:
    output_file(path, "--junit")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), junit_xml(result).encode())


def load_reference(path: Path, tolerances: Tolerances | None = None) -> Reference:
    """A reference .json, a legacy leaderboard.json, or result rows (.jsonl or run folder)."""
    return load(Path(path), tolerances or Tolerances())


def to_text_json(result: CheckResult) -> str:
    return json.dumps(result.to_json(), indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
