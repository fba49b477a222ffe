"""Leaderboard entries: one JSON file per (defense, operating point) per board, with its provenance.

    <dir>/<suite>/<board>/<entry>.json    (schema: docs/entry.schema.json)

An entry names the defense (its class's `name` and `description`), the paper it comes from, the
measured figures of its board row, the figures a paper reported beside them (each with its full
citation; never typed here for a setting the paper did not measure) and the run's provenance.
A third-party defense states its paper with a class attribute `paper = {"authors": ..., "title":
..., "venue": ..., "arxiv": ..., "link": ...}` and reported figures with `reported = [{"metric":
..., "value": ..., "suite": ..., "cite": {"authors", "title", "venue", "table", "row", "column"}}]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.cache import atomic_write_bytes, digest
from bench.defenses import get_defense
from bench.errors import UserError
from bench.paths import slug, under
from bench.reports.boards import Board, BoardRow
from bench.reports.papers import CORELOCKER, MFUE, NE, PAPER_NOTES, PAPERS, paper_of  # noqa: F401  (their home)

ENTRY_KIND = "authbench-entry"
ENTRY_VERSION = 1
SCHEMA = Path(__file__).resolve().parent.parent.parent / "docs" / "entry.schema.json"


def _cls(defense: str):
    try:
        return get_defense(defense)
    except UserError:
        return None


def reported_of(defense: str, suite: str) -> list[dict]:
    """Figures a paper reported for this defense on this suite (the class's `reported`, filtered by suite)."""
    cls = _cls(defense)
    return [dict(r) for r in (getattr(cls, "reported", None) or []) if r.get("suite") == suite]


def entry_name(board: Board, row: BoardRow) -> str:
    """The entry's file stem: the defense's name and a digest of (board, operating point)."""
    return f"{slug(row.name, 'defense')[:80]}-{digest([board.key.slug, row.entry])[:10]}"


def build_entry(board: Board, row: BoardRow) -> dict:
    return {
        "kind": ENTRY_KIND, "version": ENTRY_VERSION,
        "name": row.name, "description": row.description, "defense": row.defense,
        "board": {**board.key.to_json(), "slug": board.key.slug, "title": board.title, "headline": board.headline},
        "operating_point": {"entry": row.entry, "params": row.params, "psnr": row.psnr, "psnr_mode": row.psnr_mode,
                            "release": row.release},
        "paper": paper_of(row.defense),
        "measured": {"values": row.values, "rank": row.rank, "complete": row.complete, "missing": list(row.missing),
                     "worst_attack": row.worst_attack, "authorized": list(row.authorized), "n": list(row.n),
                     "per_model": row.per_model},
        "reported": reported_of(row.defense, board.key.suite),
        "provenance": {**row.provenance, "models": board.models},
    }


def write_entries(boards: list[Board], folder: Path, only_new: bool = True, ranked_only: bool = False) -> list[Path]:
    """One entry file per row (the new rows when `only_new`; the ranked ones when `ranked_only`) of every board,
    under folder/<suite>/<board>/."""
    paths = []
    for board in boards:
        for row in board.rows:
            if (only_new and not row.new) or (ranked_only and row.rank is None):
                continue
            path = under(folder, board.key.suite, board.key.board, f"{entry_name(board, row)}.json",
                         what="leaderboard entry path part")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (json.dumps(build_entry(board, row), indent=1) + "\n").encode())
            paths.append(path)
    return paths


def entry_schema() -> dict:
    return json.loads(SCHEMA.read_text())
