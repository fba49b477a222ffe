"""The six families as data (bench/reports/families.toml) and what is read about them: the registered methods of
each (from the defense registry) and each shipped board's leader (from the shipped boards). The pages that show
them (docs/families.md, the site's `families` page) are bench.reports.families; the methods' paper figures are
bench.reports.reported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from bench.defenses import DEFENSES
from bench.reports.boards import Board, boards_from_json

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Family:
    """One family: what it protects, how it is scored, the boards it ranks on ((suite, board) pairs) and which
    registered defenses belong to it (their `protocol`, and `board` where a protocol holds two families)."""

    name: str
    protects: str
    protocol: str
    headline: str
    boards: tuple[tuple[str, str], ...]
    doc: str
    board: str | None = None  # the defenses' `board` attribute that selects this family within the protocol


def _load_families(path: Path) -> tuple[Family, ...]:
    """The families as data (bench/reports/families.toml): no protocol is named in this module."""
    return tuple(Family(**{**entry, "boards": tuple(tuple(b) for b in entry["boards"])})
                 for entry in tomllib.loads(path.read_text())["family"])


FAMILIES = _load_families(Path(__file__).with_name("families.toml"))


# the harness's own controls and reference rows: registered defenses that are no paper's method
CONTROLS = ("none", "noise", "plain", "clean-data")


def family_methods(family: Family) -> tuple[list[str], list[str]]:
    """(methods, controls and reference rows) registered for the family, in registration order."""
    methods, others = [], []
    for name, cls in DEFENSES.items():
        if getattr(cls, "protocol", None) != family.protocol or getattr(cls, "board", None) != family.board:
            continue
        (others if name in CONTROLS else methods).append(name)
    return methods, others


def shipped_boards(suite: str, root: Path = ROOT) -> tuple[list[Board], Path | None]:
    """The shipped boards of a suite and the file they came from (see the module docstring), or ([], None)."""
    for path in (root / "reports" / "leaderboards" / f"{suite}.json", root / "bench" / "leaderboards" / f"{suite}.json",
                 root / "reports" / suite / "boards.json"):
        if path.is_file():
            boards = boards_from_json(json.loads(path.read_text()))
            if boards:
                return boards, path
    return [], None


@dataclass(frozen=True, kw_only=True)
class Leader:
    family: str
    suite: str
    board: str
    models: str
    leader: str
    value: float | None
    headline: str
    worst_attack: str
    ranked: int
    source: str


def leaders(root: Path = ROOT) -> list[Leader]:
    """One line per shipped board of every family: its rank-1 row (or none ranked)."""
    out = []
    for family in FAMILIES:
        for suite, name in family.boards:
            boards, path = shipped_boards(suite, root)
            found = [b for b in boards if b.key.board == name]
            if not found:
                out.append(Leader(family=family.name, suite=suite, board=name, models="-", leader="(no shipped board)",
                                  value=None, headline="-", worst_attack="-", ranked=0, source="-"))
            for b in found:
                ranked = [r for r in b.rows if r.rank is not None]
                top = min(ranked, key=lambda r: r.rank) if ranked else None
                out.append(Leader(
                    family=family.name, suite=suite, board=b.key.slug,
                    models=", ".join(b.key.authorized) or ("trained: " + ", ".join(b.key.evaluated) if b.key.evaluated else "-"),
                    leader=top.name if top else "(none ranked)",
                    value=None if top is None else top.values.get(b.headline), headline=b.headline,
                    worst_attack=(top.worst_attack or "-") if top else "-", ranked=len(ranked),
                    source=str(path.relative_to(root)) if path is not None else "-"))
    return out


def format_value(v: float | None, headline: str) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if headline == "worst_auc" else f"{v:.1f}"
