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
from bench.reports.boards import (Board, boards_from_json, build_boards, glance, parse_standard, place, restandard,
                                  write_boards)
from bench.reports.entries import write_entries
from bench.reports.tables import provenance_of
from bench.results import read_rows
from bench.suite import load_suite

REFERENCE_DIR = Path("reports") / "leaderboards"  # a checkout's references (the working directory's)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "leaderboards"  # the boards shipped in the package


def find_reference(suite: str) -> Path:
    """The reference boards of suite `suite`: ./reports/leaderboards/<suite>.json where the working directory
    is a checkout, else the boards shipped inside the installed package (bench/leaderboards/<suite>.json)."""
    for folder in (REFERENCE_DIR, SHIPPED_DIR):
        path = folder / f"{suite}.json"
        if path.is_file():
            return path
    shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))
    raise UserError(f"no reference boards for suite {suite!r} (looked in {REFERENCE_DIR}/ and the package's "
                    f"{SHIPPED_DIR.name}/: {', '.join(shipped) or 'none'}); pass --against a leaderboard .json or a "
                    "results.jsonl")


def import_plugins_of(rows: list[dict]) -> None:
    """Make a run's plugin modules importable here as they were in `run`: the working directory and the
    suite file's folders (its own folder and [models] python_path, as `run` put them on sys.path); then refuse,
    in one line, a defense that still cannot be imported (its name, description and paper come from its class)."""
    import importlib
    import sys

    folders = [Path.cwd()]
    for path in dict.fromkeys(str((r.get("provenance") or {}).get("suite_path") or "") for r in rows):
        if path and Path(path).is_file():
            try:
                folders += load_suite(path).import_path
            except UserError:
                folders.append(Path(path).resolve().parent)
    for folder in reversed(folders):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    from bench.defenses import get_defense

    for name in dict.fromkeys(r["defense"] for r in rows if r.get("defense") not in (None, "none")):
        try:
            get_defense(name)
        except UserError as exc:
            raise UserError(f"defense {name!r} of the results cannot be imported here ({exc}); run rank from the "
                            "folder you ran `authbench run` in, or install the defense's package") from None


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
    import_plugins_of(rows)
    against = Path(against) if against is not None else find_reference(name)
    reference = load_reference_boards(against, suite)
    merged = place(restandard(rows, reference), reference)
    touched = [b for b in merged if any(r.new for r in b.rows)]
    results = Path(results)
    out = Path(out) if out is not None else (results if results.is_dir() else results.parent) / "ranked"
    lines = [f"ranked against {against}", ""]
    for b in touched:
        new = [r for r in b.rows if r.new]
        lines += [glance(b, top=10), *(f"NEW {r.name}" + (f" ({r.defense})" if r.defense != r.name else "")
                                       + (f": {r.description}" if r.description else "") for r in new), ""]
    provenance = provenance_of(rows)
    paths = write_boards(touched, out, provenance)
    site = write_rank_site(touched, out, paths, provenance)
    if submit is not None:
        paths += write_entries(touched, Path(submit))
    return lines + [str(p) for p in paths] + [f"site: {site}"]


def write_rank_site(boards: list[Board], out: Path, paths: list[Path], provenance: dict) -> Path:
    """The merged boards as a static HTML page (<out>/site/index.html and boards.html): per board its plot,
    its readable table (NEW rows marked), its sweep, and every column behind a toggle."""
    from bench.reports.pages import report_pages
    from bench.reports.site import write_site

    files = [Path(p) for p in paths if Path(p).is_file()]
    about = (f"Rows of suite {provenance.get('suite')} placed on the reference boards by `authbench rank`; NEW marks "
             "the ranked run's rows. Every number is measured by authbench (provenance per table).")
    return write_site(out / "site", title=f"authbench rank: {provenance.get('suite')}", pages=report_pages([], files),
                      about=about, provenance=provenance, downloads=[p for p in files if p.suffix in (".csv", ".json", ".md")])[0]
