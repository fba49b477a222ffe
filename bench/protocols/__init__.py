"""Protocols: how each family of defenses is planned, run and reported (bench.protocols.base).

Importing this package registers the built-ins; `protocol_of(suite, entry)` is the one place
that decides which protocol an entry of a suite belongs to, and `render(rows, ...)` the one
place that dispatches reports on each row's `protocol`.
"""

from __future__ import annotations

from pathlib import Path

from bench.core.types import infer_protocol
from bench.defenses import get_defense
from bench.protocols import glue, input_auth, mmbench, model_auth, ownership  # noqa: F401  (registers them)
from bench.protocols.base import PROTOCOLS, Protocol, get_protocol, grid
from bench.protocols import classify  # noqa: F401  (public for third-party protocols)
from bench.protocols.model_auth import render_baselines
from bench.reports.boards import build_boards, parse_standard, write_boards
from bench.reports.leaderboard import RANKED, leaderboard, write_leaderboard
from bench.reports.pages import write_report_site
from bench.reports.tables import provenance_of

PRIMARY = "input"  # a suite no protocol owns is an image suite


def primary_protocol(suite) -> Protocol:
    """The protocol that owns the whole suite (GLUE, MMBench), else image input authorization."""
    for name in PROTOCOLS.names():
        cls = PROTOCOLS.get(name)
        if cls.owns_suite(suite):
            return cls()
    return get_protocol(PRIMARY)


def protocol_of(primary: Protocol, entry) -> Protocol:
    """The protocol of one [[defenses]] entry: the suite's owner, else the one its defense names."""
    if primary.name != PRIMARY:
        return primary
    return get_protocol(get_defense(entry.name).protocol)


def render(rows: list[dict], out_dir: Path, cfg: dict, standard_attacks: dict | None = None, *, site: bool = False,
           classes: int | None = None) -> list[Path]:
    """Every protocol's reports for its rows, then the leaderboard of the image protocols, NE Table 3, and
    the like-for-like boards (bench.reports.boards) scored under the suite's `standard_attacks`; with
    `site`, also the static HTML site of them all in <out_dir>/site/ (its index.html is listed).
    `classes` (the evaluated split's class count, bench.api.dataset_classes) puts the chance line on figures."""
    out_dir = Path(out_dir)
    cfg = {**cfg, "classes": classes} if classes else cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    by_protocol: dict[str, list[dict]] = {}
    for r in rows:
        by_protocol.setdefault(infer_protocol(r), []).append(r)
    paths: list[Path] = []
    clean = [r for r in by_protocol.get(PRIMARY, []) if r.get("role") == "clean"]
    for name, part in by_protocol.items():
        protocol = get_protocol(name)
        if getattr(protocol, "uses_clean_rows", False) and name != PRIMARY:  # its tables' "Original" column
            part = part + clean
        paths += protocol.reports(part, out_dir, cfg)
    boards = build_boards(rows, parse_standard(standard_attacks))
    ranked = [r for r in rows if infer_protocol(r) in RANKED]
    if ranked:
        paths += write_leaderboard(leaderboard(ranked), out_dir, provenance_of(ranked),
                                   boards=[b.to_json() for b in boards])
        paths += render_baselines(ranked, out_dir, cfg)
    if boards:
        paths += write_boards(boards, out_dir, provenance_of(rows))
    if site:
        paths.append(write_report_site(rows, out_dir, paths)[0])
    return paths


__all__ = ["PROTOCOLS", "Protocol", "classify", "get_protocol", "grid", "primary_protocol", "protocol_of", "render"]
