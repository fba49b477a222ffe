"""`authbench rank`: place a new run's rows on the matching reference board (bench.reports.boards).

The reference is a leaderboard or boards JSON carrying `boards` (reports/leaderboards/<suite>.json
once regenerated), or a results.jsonl / run folder whose boards are computed with its suite's
[standard_attacks]. The new rows are scored under the reference board's standard attacks, merged
(marked NEW) and re-ranked; a run on other models, data or suite is refused with one line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bench.core.errors import UserError
from bench.defenses import get_defense
from bench.paths import output_folder, safe_part, under
from bench.reports.boards import (Board, boards_from_json, build_boards, glance, parse_standard, place, restandard,
                                  write_boards)
from bench.reports.entries import write_entries
from bench.reports.identity import RunIdentity, differences, of_rows, refuse
from bench.reports.tables import provenance_of
from bench.core.results import read_rows
from bench.suite import load_suite, recorded_suite
from bench.reports.pages import report_pages
from bench.reports.site import write_site

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
    from bench.core.declared import declared

    own = set()  # defenses a protocol runs itself, outside the defense registry (the GLUE protocol's ne-text)
    for protocol in dict.fromkeys(r.get("protocol") for r in rows):
        own.update(getattr(declared(protocol) if protocol else None, "own_defenses", ()))
    for name in dict.fromkeys(r["defense"] for r in rows if r.get("defense") not in (None, "none", *own)):
        try:
            get_defense(name)
        except UserError as exc:
            raise UserError(f"defense {name!r} of the results cannot be imported here ({exc}); run rank from the "
                            "folder you ran `authbench run` in, or install the defense's package") from None


def suite_standard(name: str, explicit: bool = False) -> dict:
    """The [standard_attacks] of the suite called `name` (a shipped suite or a path), else none; a suite
    named on the command line (`explicit`) that does not load is an error, not "no standard attacks"."""
    try:
        return parse_standard(load_suite(name).standard_attacks)
    except UserError:
        if explicit:
            raise
        return {}


NO_BOARDS = ("holds no boards (a leaderboard written before boards were recorded); rank against a run of the "
             "reference suite instead: `authbench run <suite> --out runs/<suite>-reference`, then "
             "`authbench rank RESULTS --against runs/<suite>-reference/results.jsonl`")


def _reference(path: Path, suite: str | None) -> tuple[list[Board], RunIdentity]:
    """The boards of a reference and what it records of its run's identity."""
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
            raise UserError(f"reference {str(path)!r} {NO_BOARDS}")
        ident = RunIdentity.from_json(data.get("identity"))
        return boards, replace(ident, standard_attacks={b.key.board: b.key.standard_attacks for b in boards})
    rows = read_rows(path)
    if not rows:
        raise UserError(f"reference {str(path)!r} holds no result rows")
    if suite:
        standard = suite_standard(suite, explicit=True)
    else:  # the suite file the reference rows recorded (else the shipped suite of their name), as the run's
        recorded, _ = recorded_suite(rows)
        standard = parse_standard(recorded.standard_attacks) if recorded is not None else {}
    boards = build_boards(rows, standard)
    return boards, of_rows(rows, {b.key.board: b.key.standard_attacks for b in boards})


def load_reference_boards(path: Path, suite: str | None = None) -> list[Board]:
    """The boards of a reference: a .json with `boards`, or result rows (scored under `suite`'s
    [standard_attacks], default the rows' own suite)."""
    return _reference(path, suite)[0]


def _run_suite(rows: list[dict], results) -> str:
    """The one suite the rows to rank belong to, checked to be a plain name (it names output folders)."""
    names = sorted({str(r.get("suite")) for r in rows})
    if len(names) > 1:
        raise UserError(f"{results} holds rows of {len(names)} suites ({', '.join(map(repr, names[:3]))}"
                        f"{' ...' if len(names) > 3 else ''}); rank one suite's run at a time")
    return safe_part(names[0], f"the suite of the rows in {results}")


def rank_command(results: Path, *, against: Path | None = None, out: Path | None = None, submit: Path | None = None,
                 suite: str | None = None) -> list[str]:
    """Rank `results` against `against`; returns the lines to print (the touched boards, then the files)."""
    rows = read_rows(results)  # each row validated through Row.from_json
    if not rows:
        raise UserError(f"{results} holds no result rows; run a suite with your defense first")
    name = _run_suite(rows, results)
    import_plugins_of(rows)
    if suite is not None:
        suite_standard(suite, explicit=True)  # --suite names a suite that loads, whatever the reference is
    results = Path(results)
    out = output_folder(out, "--out") if out is not None else \
        under(results if results.is_dir() else results.parent, "ranked")
    if submit is not None:
        output_folder(submit, "--submit")
    against = Path(against) if against is not None else find_reference(name)
    reference, ref_identity = _reference(against, suite)
    new = restandard(rows, reference)
    if not new:
        raise UserError("the results hold no rows of a ranked protocol (input, model, verify); run a suite with a "
                        "defense first")
    kinds = {b.key.board for b in new}
    recorded, _ = recorded_suite(rows)
    own = parse_standard(recorded.standard_attacks) if recorded is not None else None
    run_identity = of_rows(rows, None if own is None else {k: own.get(k, ()) for k in kinds})
    ref_std = ref_identity.standard_attacks
    ref_identity = replace(ref_identity, standard_attacks=None if ref_std is None else
                           {k: tuple(ref_std.get(k, ())) for k in kinds})
    refuse(differences(run_identity, ref_identity, parts=("suite", "data", "weights", "standard_attacks")),
           f"the run in {results} and {against}",
           "rank a run of the reference's suite, data, models and [standard_attacks]")
    merged = place(new, reference)
    touched = [b for b in merged if any(r.new for r in b.rows)]
    lines = [f"ranked against {against}", ""]
    for b in touched:
        fresh = [r for r in b.rows if r.new]
        lines += [glance(b, top=10), *(f"NEW {r.name}" + (f" ({r.defense})" if r.defense != r.name else "")
                                       + (f": {r.description}" if r.description else "") for r in fresh), ""]
    provenance = provenance_of(rows)
    paths = write_boards(touched, out, provenance)
    site = write_rank_site(touched, out, paths, provenance)
    if submit is not None:
        paths += write_entries(touched, Path(submit))
    return lines + [str(p) for p in paths] + [f"site: {site}"]


def write_rank_site(boards: list[Board], out: Path, paths: list[Path], provenance: dict) -> Path:
    """The merged boards as a static HTML page (<out>/site/index.html and boards.html): per board its plot,
    its readable table (NEW rows marked), its sweep, and every column behind a toggle."""

    files = [Path(p) for p in paths if Path(p).is_file()]
    about = (f"Rows of suite {provenance.get('suite')} placed on the reference boards by `authbench rank`; NEW marks "
             "the ranked run's rows. Every number is measured by authbench (provenance per table).")
    return write_site(out / "site", title=f"authbench rank: {provenance.get('suite')}", pages=report_pages([], files),
                      about=about, provenance=provenance, downloads=[p for p in files if p.suffix in (".csv", ".json", ".md")])[0]
