"""`authbench rank`: place a new run's rows on the matching reference board (bench.reports.boards).

The reference is a leaderboard or boards JSON carrying `boards` (reports/leaderboards/<suite>.json
once regenerated), or a results.jsonl / run folder whose boards are computed with its suite's
[standard_attacks]. The new rows are scored under the reference board's standard attacks, merged
(marked NEW) and re-ranked; a run on other models, data or suite is refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import UserError
from bench.reports.boards import (Board, boards_from_json, build_boards, format_board, parse_standard, place,
                                  restandard, write_boards)
from bench.reports.entries import write_entries
from bench.reports.tables import provenance_of
from bench.results import read_rows
from bench.suite import load_suite

REFERENCE_DIR = Path("reports") / "leaderboards"


def suite_standard(name: str) -> dict:
    """The [standard_attacks] of the suite called `name` (a shipped suite or a path), else none."""
    try:
        return parse_standard(load_suite(name).standard_attacks)
    except UserError:
        return {}


def load_reference_boards(path: Path, suite: str | None = None) -> list[Board]:
    """The boards of a reference: a .json with `boards`, or result rows (scored under `suite`'s
    [standard_attacks], default the rows' own suite)."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"reference {str(path)!r} does not exist; pass a leaderboard/boards .json or a results.jsonl")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"reference {str(path)!r} is not readable JSON ({e}); pass a leaderboard/boards .json")
        boards = boards_from_json(data)
        if boards is None:
            raise UserError(f"reference {str(path)!r} holds no boards (a leaderboard written before boards, or another "
                            "file); regenerate it with `authbench report`, or pass the reference run's results.jsonl")
        return boards
    rows = read_rows(path)  # each row validated through Row.from_json
    if not rows:
        raise UserError(f"reference {str(path)!r} holds no result rows")
    return build_boards(rows, suite_standard(suite or rows[0]["suite"]))


def rank_command(results: Path, *, against: Path | None = None, out: Path | None = None, submit: Path | None = None,
                 suite: str | None = None) -> list[str]:
    """Rank `results` against `against`; returns the lines to print (the touched boards, then the files)."""
    rows = read_rows(results)  # each row validated through Row.from_json
    if not rows:
        raise UserError(f"{results} holds no result rows; run a suite with your defense first")
    name = rows[0]["suite"]
    if against is None:
        against = REFERENCE_DIR / f"{name}.json"
        if not against.exists():
            raise UserError(f"no reference for suite {name!r} at {against}; pass --against a leaderboard .json or results.jsonl")
    reference = load_reference_boards(against, suite)
    merged = place(restandard(rows, reference), reference)
    touched = [b for b in merged if any(r.new for r in b.rows)]
    out = Path(out) if out is not None else Path("reports") / name / "ranked"
    lines = [format_board(b) + "\n" for b in touched]
    paths = write_boards(touched, out, provenance_of(rows))
    if submit is not None:
        paths += write_entries(touched, Path(submit))
    return lines + [str(p) for p in paths]
