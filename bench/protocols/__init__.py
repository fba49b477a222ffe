"""Protocols: how each family of defenses is planned, run and reported (bench.protocols.base).

Importing this package registers the built-ins; `protocol_of(suite, entry)` is the one place
that decides which protocol an entry of a suite belongs to, and `render(rows, ...)` the one
place that dispatches reports on each row's `protocol`.
"""

from __future__ import annotations

from pathlib import Path

from bench.core.declared import protocols as declared_protocols
from bench.core.types import infer_protocol
from bench.core.results import json_view
from bench.defenses import get_defense
from bench.protocols import domain, glue, input_auth, mmbench, model_auth, ownership, unlearnable  # noqa: F401  (registers them)
from bench.protocols.base import PROTOCOLS, Protocol, get_protocol, grid
from bench.protocols import classify  # noqa: F401  (public for third-party protocols)
from bench.protocols.model_auth import render_baselines
from bench.reports.boards import build_boards, parse_standard, write_boards
from bench.reports.leaderboard import leaderboard, ranked_rows, write_leaderboard
from bench.reports.pages import write_report_site
from bench.reports.tables import provenance_of

def primary_protocol(suite) -> Protocol:
    """The protocol that owns the whole suite (its [data] dataset: GLUE, MMBench), else the one declared `primary`
    (image input authorization)."""
    for name in PROTOCOLS.names():
        cls = PROTOCOLS.get(name)
        if cls.owns_suite(suite):
            return cls()
    return next(cls for cls in declared_protocols() if cls.primary)()


def protocol_of(primary: Protocol, entry) -> Protocol:
    """The protocol of one [[defenses]] entry: the suite's owner, else the one its defense names."""
    if not primary.primary:
        return primary
    return get_protocol(get_defense(entry.name).protocol)


def rows_by_protocol(rows: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(infer_protocol(r), []).append(r)
    return out


def render(rows: list, out_dir: Path, cfg: dict, standard_attacks: dict | None = None, *, site: bool = False,
           classes: int | None = None) -> list[Path]:
    """Every protocol's reports for its rows, then the leaderboard of the ranked protocols, NE Table 3, and
    the like-for-like boards (bench.reports.boards) scored under the suite's `standard_attacks`; with
    `site`, also the static HTML site of them all in <out_dir>/site/ (its index.html is listed).
    `classes` (the evaluated split's class count, bench.api.dataset_classes) puts the chance line on figures.
    `rows`: typed rows (bench.core.types.Row) or their JSON; the reports read the JSON view, built here once."""
    rows = json_view(rows)
    out_dir = Path(out_dir)
    cfg = {**cfg, "classes": classes} if classes else cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    by_protocol = rows_by_protocol(rows)
    paths: list[Path] = []
    for name, part in by_protocol.items():
        protocol = get_protocol(name)
        if protocol.uses_clean_rows:  # its tables' "Original" column: the other protocols' clean baseline
            part = part + [r for other, rs in by_protocol.items() if other != name for r in rs if r.get("role") == "clean"]
        paths += protocol.reports(part, out_dir, cfg)
    boards = build_boards(rows, parse_standard(standard_attacks))
    ranked = ranked_rows(rows)
    if ranked:
        paths += write_leaderboard(leaderboard(ranked), out_dir, provenance_of(ranked),
                                   boards=[b.to_json() for b in boards])
        paths += render_baselines(ranked, out_dir, cfg)
    if boards:
        paths += write_boards(boards, out_dir, provenance_of(rows))
    if site:
        paths.append(write_report_site(rows, out_dir, paths)[0])
    return paths


def summary_lines(rows: list, reports: list[Path]) -> list[str]:
    """What `authbench run` prints for the rows, before the counts: each protocol's `summary`, in the order the
    protocols were defined, each text once."""
    rows = json_view(rows)
    present = rows_by_protocol(rows)
    out: list[str] = []
    for name in [*[c.name for c in declared_protocols() if c.name in present], *[n for n in present if n not in
                                                                                 {c.name for c in declared_protocols()}]]:
        for text in get_protocol(name).summary(rows, reports):
            if text not in out:
                out.append(text)
    return out


__all__ = ["PROTOCOLS", "Protocol", "classify", "get_protocol", "grid", "primary_protocol", "protocol_of", "render",
           "summary_lines"]
