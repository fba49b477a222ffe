"""Today's reports as the static site's pages (bench.reports.site).

`report_pages(rows, paths)` turns what `bench.protocols.render` wrote into `SitePage`s: the
leaderboard with one provenance entry per row (computed from the result rows it aggregates),
every standard CSV with its provenance sidecar, the JSON boards, the figures, and the Markdown
reports that have no CSV as text. A table with `measured` and `reported` columns (or `X
(measured)` / `X (reported)` pairs) shows their delta. Further boards plug in by handing their
own `SiteTable`s to `write_site`; nothing here depends on a board's layout beyond its file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from bench.reports.leaderboard import GROUP, leaderboard, ranked_rows, row_key
from bench.reports.site import SitePage, SiteTable, slugify, write_site
from bench.reports.tables import PROVENANCE_SUFFIX, provenance_of, results_frame, sidecar_path
from bench.reports.boards import boards_from_json, is_sweep

SITE_DIR = "site"  # the site's folder inside a reports folder
FAMILIES = (  # (file-name prefix, page slug, page title); the first match wins
    ("boards", "boards", "Leaderboard (like-for-like boards, ranked by the worst-case auth_gap)"),
    ("table1_", "input-authorization", "Input authorization (NE tables and figures)"),
    ("table2_", "input-authorization", "Input authorization (NE tables and figures)"),
    ("fig1_", "input-authorization", "Input authorization (NE tables and figures)"),
    ("ne_", "input-authorization", "Input authorization (NE tables and figures)"),
    ("table3_", "baselines", "Baselines (NE Table 3 layout)"),
    ("algospec", "baselines", "Baselines (NE Table 3 layout)"),
    ("corelocker", "model-authorization", "Model authorization (CoreLocker)"),
    ("fingerprint", "ownership", "Ownership verification (fingerprints)"),
    ("table7_", "tasks", "Text and VLM tasks (NE Tables 7 and 4)"),
    ("table4_", "tasks", "Text and VLM tasks (NE Tables 7 and 4)"),
)
OTHER = ("other", "Other reports")
DECIMALS = {"rank": 0, "n_models": 0, "first_layer_dev_auth": 3, "encode_ms": 3, "protect_ms": 1, "key_kb": 1}
FINE = ("auc", "tpr", "score", "pos_mean", "neg_mean", "dev", "detect")  # columns shown to 3 decimals
FIGURES = (".png", ".svg")
DOWNLOADS = (".csv", ".json", ".md")


def _family(path: Path) -> tuple[str, str]:
    name = f"boards/{path.name}" if path.parent.name == "boards" else path.name  # a board's CSV: boards/<slug>.csv
    for prefix, slug, title in FAMILIES:
        if name.startswith(prefix):
            return slug, title
    return OTHER


def _decimals(columns) -> dict:
    return {c: DECIMALS.get(c, 3 if any(f in c.lower() for f in FINE) else 2) for c in columns}


def _title(path: Path) -> str:
    """The first `# ` heading of the Markdown report beside `path`, else its file name."""
    md = path.with_suffix(".md")
    if md.is_file():
        for line in md.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem.replace("_", " ")


def _compare(columns: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(measured, reported) column pairs, and the columns to drop because the site recomputes them."""
    pairs, drop = [], []
    if "measured" in columns and "reported" in columns:
        pairs.append(("measured", "reported"))
        drop += [c for c in ("delta",) if c in columns]
    for column in columns:
        if column.endswith(" (measured)") and column.replace("(measured)", "(reported)") in columns:
            pairs.append((column, column.replace("(measured)", "(reported)")))
    return pairs, drop


def read_report_csv(path: Path) -> pd.DataFrame:
    """A report CSV with its text kept as written (pandas would read `true` as a boolean): a column
    becomes numeric only when every non-empty cell is a number; empty cells are missing."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in frame.columns:
        empty = frame[column] == ""
        text = frame[column].mask(empty)
        numbers = pd.to_numeric(text, errors="coerce")
        frame[column] = numbers if (numbers.notna() == ~empty).all() and not empty.all() else text
    return frame


def csv_table(path: Path) -> SiteTable:
    """A standard CSV report (and its provenance sidecar) as a site table."""
    path = Path(path)
    frame = read_report_csv(path)
    pairs, drop = _compare([str(c) for c in frame.columns])
    frame = frame.drop(columns=drop)
    side = sidecar_path(path)
    payload = json.loads(side.read_text()) if side.is_file() else {}
    return SiteTable.from_frame(frame, title=payload.get("title") or _title(path), slug=slugify(path.stem),
                                notes=payload.get("note", ""),
                                meta=payload.get("provenance") or {}, compare=pairs,
                                decimals=_decimals(frame.columns))


def json_board_table(path: Path) -> SiteTable | None:
    """A JSON board (a `rows` list of flat records, e.g. fingerprint_leaderboard.json) as a site table."""
    payload = json.loads(Path(path).read_text())
    records = payload.get("rows") if isinstance(payload, dict) else None
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    frame = pd.DataFrame.from_records(records)
    frame = frame[[c for c in frame.columns if c != "key"]]
    pairs, drop = _compare([str(c) for c in frame.columns])
    frame = frame.drop(columns=drop)
    note = f"Ranked by {', '.join(payload['rank_by'])}." if payload.get("rank_by") else ""
    return SiteTable.from_frame(frame, title=_title(Path(path)), slug=slugify(Path(path).stem), notes=note,
                                meta=payload.get("provenance") or {}, compare=pairs, decimals=_decimals(frame.columns))


def _unique(values) -> list:
    return list(dict.fromkeys(v for v in values if v not in (None, "")))


def row_provenance(rows: list[dict]) -> dict:
    """Where one aggregated board row comes from: its cells, models, seeds, revisions, devices, costs and
    its defense's full parameters (defaults included)."""
    prov = [r.get("provenance") or {} for r in rows]
    cache = [p.get("cache") or {} for p in prov]
    first = rows[0]
    return {
        "cells": len(rows),
        "authorized models": _unique(r.get("authorized") for r in rows),
        "evaluated models": len(_unique(r.get("evaluated") for r in rows)),
        "params": first.get("params") or {},
        "point": first.get("point") or {},
        "suite": ", ".join(_unique(str(r.get("suite", "")) for r in rows)),
        "suite_digest": ", ".join(_unique(str(r.get("suite_digest", "")) for r in rows)),
        "git": ", ".join(_unique(str(p.get("git", "")) for p in prov)),
        "device": ", ".join(_unique(str(p.get("device", "")) for p in prov)),
        "seeds": sorted(_unique(p.get("seed") for p in prov)),
        "trials": sorted(_unique(r.get("trial") for r in rows)),
        "wall_s": round(sum(float(p.get("wall_s") or 0) for p in prov), 3),
        "forward passes": sum(int(p.get("forwards") or 0) for p in prov),
        "cache hits / misses": f"{sum(int(c.get('hits') or 0) for c in cache)} / {sum(int(c.get('misses') or 0) for c in cache)}",
        "first cell": first.get("cell", ""),
    }


def leaderboard_table(rows: list[dict]) -> SiteTable | None:
    """The leaderboard of the image protocols, each row with the provenance of the cells it averages."""
    ranked = ranked_rows(rows)
    if not ranked:
        return None
    board = leaderboard(ranked)
    if board.empty:
        return None
    frame = results_frame(ranked)
    protected = frame[frame["defense"] != "none"]
    members = {row_key(dict(zip(GROUP, key))): list(index)
               for key, index in protected.groupby(GROUP, sort=False, dropna=False).groups.items()}
    provenance = [row_provenance([ranked[i] for i in members[row_key(rec)]]) for rec in board.to_dict("records")]
    meta = provenance_of(ranked)
    notes = ("Ranked by auth_gap: the mean over authorized models of (its own top-1 - the best other model's top-1). "
             "Measured by authbench; expand a row's provenance for the cells it averages.")
    return SiteTable.from_frame(board, title="Leaderboard", slug="leaderboard", provenance=provenance, notes=notes,
                                meta=meta, decimals=_decimals(board.columns))


def with_board_provenance(table: SiteTable, path: Path) -> SiteTable:
    """A board's readable table with one provenance entry per row (from the boards.json beside its folder:
    the row's full parameters, authorized models, n, cells, suite digest, git, versions, wall time)."""

    source = path.parent.parent / "boards.json"
    try:
        boards = boards_from_json(json.loads(source.read_text())) or []
    except (OSError, ValueError):
        return table
    board = next((b for b in boards if b.key.slug == path.name[: -len(".csv")]), None)
    if board is None:
        return table
    rows = [r for r in board.rows if not is_sweep(r)]
    if len(rows) != len(table.rows):
        return table
    provenance = tuple({"entry": r.entry, "params": r.params, "authorized": list(r.authorized), "n": list(r.n),
                        "complete": r.complete, **({"missing": list(r.missing)} if r.missing else {}),
                        **r.provenance} for r in rows)
    return replace(table, provenance=provenance)


def report_pages(rows: list[dict], paths: list[Path]) -> list[SitePage]:
    """One page per report family, in FAMILIES order, from the files `render` wrote for `rows`."""
    paths = [Path(p) for p in paths if Path(p).is_file()]
    pages: dict[str, dict] = {}

    def page(path: Path) -> dict:
        slug, title = _family(path)
        return pages.setdefault(slug, {"title": title, "tables": [], "figures": [], "documents": []})

    tabled = {p.with_suffix("") for p in paths if p.suffix in (".csv", ".json")}
    for path in paths:
        if path.name.endswith(PROVENANCE_SUFFIX) or path.name.startswith("leaderboard."):
            continue
        if path.suffix == ".csv":
            table = csv_table(path)
            if path.name.endswith(".wide.csv"):  # every column of a board: behind a toggle, the readable one first
                table = replace(table, collapsed=True)
            elif path.parent.name == "boards" and not path.name.endswith(".sweep.csv"):
                table = with_board_provenance(table, path)
            page(path)["tables"].append(table)
        elif path.suffix == ".json" and path.with_suffix(".csv") not in paths:
            table = json_board_table(path)
            if table is not None:
                page(path)["tables"].append(table)
        elif path.suffix in FIGURES:
            page(path)["figures"].append(path)
        elif path.suffix == ".md" and path.with_suffix("") not in tabled:
            page(path)["documents"].append((path.stem.replace("_", " "), path.read_text()))
    order = [slug for _, slug, _ in FAMILIES] + [OTHER[0]]
    return [SitePage(title=p["title"], slug=slug, tables=tuple(p["tables"]), figures=tuple(p["figures"]),
                     documents=tuple(p["documents"]), figures_first=slug == "boards")
            for slug, p in sorted(pages.items(), key=lambda kv: order.index(kv[0]))]


def write_report_site(rows: list[dict], out_dir: Path, paths: list[Path]) -> list[Path]:
    """Write the site of a reports folder into `<out_dir>/site/` (index.html first); the report files
    themselves (CSV, JSON, Markdown) are its downloads, the figures are inlined in their pages."""
    out_dir = Path(out_dir)
    site = out_dir / SITE_DIR
    files = [Path(p) for p in paths if Path(p).is_file() and site not in Path(p).parents]
    prov = provenance_of(rows)
    about = (f"Reports of suite {prov['suite']} measured by authbench. Tables sort on a click of their header "
             "and filter on the words typed; every number is measured by this harness unless its column is "
             "labelled reported (quoted from a paper, with its citation in the table's notes).")
    from bench.reports.families import overview_page  # the six families and each shipped board's leader

    return write_site(site, title=f"authbench: {prov['suite']}", pages=[*report_pages(rows, files), overview_page()],
                      about=about,
                      provenance=prov, downloads=[p for p in files if p.suffix in DOWNLOADS])


__all__ = ["SITE_DIR", "csv_table", "read_report_csv", "json_board_table", "leaderboard_table", "report_pages", "row_provenance",
           "write_report_site"]
