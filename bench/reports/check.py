"""Regression check: fresh results against a stored reference leaderboard, under tolerances."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UserError
from bench.reports.leaderboard import METRIC_DIRECTIONS, leaderboard, leaderboard_records
from bench.results import read_rows

KIND = "authbench-leaderboard"


@dataclass
class CheckResult:
    """Outcome of `check`: one line per moved cell; `compared` counts (row, metric) cells."""

    regressions: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.missing


def load_reference(path: Path) -> dict | list[dict]:
    """A leaderboard .json (as written by write_leaderboard) or result rows (.jsonl or run folder)."""
    path = Path(path)
    if path.suffix != ".json":
        return read_rows(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"reference {str(path)!r} does not exist; pass a leaderboard.json or a results.jsonl")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"reference {str(path)!r} is not readable JSON ({e}); pass a leaderboard.json")
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("rows"), list):
        raise UserError(f"reference {str(path)!r} is not an authbench leaderboard (expected \"kind\": \"{KIND}\")")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            raise UserError(f"reference {str(path)!r}: rows[{i}] is not a leaderboard row (a table with a \"key\"); "
                            "pass a leaderboard.json written by authbench")
    return data


def _records(source: dict | list[dict]) -> dict[str, dict]:
    records = source["rows"] if isinstance(source, dict) else leaderboard_records(leaderboard(source))
    return {r["key"]: r for r in records}


def _number(value) -> float:
    return math.nan if value is None else float(value)


def check(fresh: list[dict] | dict, reference: dict | list[dict], tolerances: dict[str, float],
          default_tolerance: float = 1.0, strict: bool = False) -> CheckResult:
    """Compare every reference row (by key) and metric with the fresh one. A move in the worse
    direction by more than the metric's tolerance (absolute points) is a regression; a move in the
    better direction is an improvement, or a regression when `strict`. Reference rows absent from
    fresh are missing. A metric measured in the reference but not in fresh is a regression."""
    unknown = sorted(set(tolerances) - set(METRIC_DIRECTIONS))
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)} in tolerances; valid: {', '.join(METRIC_DIRECTIONS)}")
    new, ref = _records(fresh), _records(reference)
    result = CheckResult()
    for key, old in ref.items():
        if key not in new:
            result.missing.append(f"{key}: in the reference, absent from the fresh results")
            continue
        for metric, direction in METRIC_DIRECTIONS.items():
            before, after = _number(old.get(metric)), _number(new[key].get(metric))
            if math.isnan(before):
                continue
            result.compared += 1
            tol = float(tolerances.get(metric, default_tolerance))
            line = (f"{key} {metric}: reference {before:.2f} -> fresh {after:.2f} "
                    f"(delta {after - before:+.2f}, tolerance {tol:g}, {direction} is better)")
            if math.isnan(after):
                result.regressions.append(f"{key} {metric}: reference {before:.2f} -> fresh not measured")
                continue
            gain = (after - before) if direction == "higher" else (before - after)
            if gain < -tol:
                result.regressions.append(line)
            elif gain > tol:
                (result.regressions if strict else result.improvements).append(
                    line + (" [improvement; strict]" if strict else ""))
    return result


def format_check(result: CheckResult) -> str:
    """Human-readable summary, one line per moved cell."""
    lines = [f"compared {result.compared} cells: {len(result.regressions)} regression(s), "
             f"{len(result.missing)} missing row(s), {len(result.improvements)} improvement(s) -> "
             f"{'OK' if result.ok else 'FAIL'}"]
    for title, items in (("REGRESSION", result.regressions), ("MISSING", result.missing),
                         ("improved", result.improvements)):
        lines += [f"  {title}: {item}" for item in items]
    return "\n".join(lines)
