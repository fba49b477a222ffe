"""A self-contained static HTML site of tables and figures (no network needed to view it).

The API knows nothing of boards or protocols: a `SiteTable` is a title, columns, rows and
(optionally) one provenance dict per row; a `SitePage` groups tables and figures; `write_site`
renders them with the Jinja2 templates in bench/reports/templates/:

    site/index.html          the index: every page and its tables, the downloads
    site/<page>.html         its tables (sortable, filterable, per-row provenance), its figures
    site/data/<table>.csv    each table as a standard CSV, and as JSON (rows + provenance)
    site/downloads/<file>    the report files handed to `write_site` (copied)

Styles, the table script and the figures are inlined in every page (figures as data URIs), so a
page opened from disk shows everything with no request to any server. A table that names
(measured, reported) column pairs in `compare` shows their delta beside them.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from bench.errors import UserError
from bench.paths import safe_part

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MARKER = ".authbench-site"  # written into every site folder; only a folder holding it is ever cleared
FIGURE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
DEFAULT_DECIMALS = 2


def slugify(text: str) -> str:
    """A file-safe slug of `text` (lower case letters, digits, '-' and '_')."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", str(text).lower()).strip("-_")
    return slug or "table"


def _plain(value):
    """A JSON-ready cell: numpy scalars unwrapped, NaN and pandas NA as None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, kw_only=True)
class SiteTable:
    """One table of the site. `rows` are dicts keyed by `columns` (or a DataFrame, whose columns are used
    when `columns` is empty); `provenance`, when given, holds one
    dict per row (shown expandable beside it); `meta` is the provenance of the whole table;
    `compare` names (measured column, reported column) pairs whose delta the site shows."""

    title: str
    slug: str
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    provenance: tuple[dict, ...] = ()
    notes: str = ""
    meta: dict = field(default_factory=dict)
    compare: tuple[tuple[str, str], ...] = ()
    decimals: dict = field(default_factory=dict)  # column -> decimals shown (sorting uses the full value)
    collapsed: bool = False  # shown behind a toggle (a board's wide table of every column)

    def __post_init__(self):
        # rows may be given as a DataFrame or any list of dicts; they are kept as a tuple of plain dicts
        if isinstance(self.rows, pd.DataFrame):
            frame = self.rows
            object.__setattr__(self, "columns", tuple(self.columns) or tuple(str(c) for c in frame.columns))
            rows = [dict(zip((str(c) for c in frame.columns), rec)) for rec in frame.itertuples(index=False, name=None)]
        else:
            rows = [dict(r) for r in self.rows]
            object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", tuple({c: _plain(v) for c, v in r.items()} for r in rows))
        object.__setattr__(self, "provenance", tuple(dict(p) for p in self.provenance))
        object.__setattr__(self, "compare", tuple(tuple(p) for p in self.compare))
        if not SLUG.match(self.slug):
            raise UserError(f"site table slug {self.slug!r} is not file-safe; use lower-case letters, digits, '-', '_'")
        if self.provenance and len(self.provenance) != len(self.rows):
            raise UserError(f"site table {self.slug!r}: {len(self.provenance)} provenance entries for "
                            f"{len(self.rows)} rows; give one per row or none")
        for measured, reported in self.compare:
            missing = [c for c in (measured, reported) if c not in self.columns]
            if missing:
                raise UserError(f"site table {self.slug!r}: compare names column {missing[0]!r}, not among "
                                f"its columns ({', '.join(self.columns)})")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, title: str, slug: str | None = None, provenance=(),
                   notes: str = "", meta: dict | None = None, compare=(), decimals: dict | None = None) -> "SiteTable":
        """A table from a DataFrame (its index is dropped; reset it first to keep it as a column)."""
        return cls(title=title, slug=slug or slugify(title), columns=(), rows=frame, provenance=provenance,
                   notes=notes, meta=dict(meta or {}), compare=compare, decimals=dict(decimals or {}))

    def delta_column(self, measured: str, reported: str) -> str:
        return f"Δ {measured} − {reported}"

    def shown_columns(self) -> list[tuple[str, str]]:
        """(column, kind) in display order: each compared pair is followed by its delta column."""
        measured = {m for m, _ in self.compare}
        reported = {r: m for m, r in self.compare}
        out = []
        for column in self.columns:
            kind = "measured" if column in measured else "reported" if column in reported else ""
            out.append((column, kind))
            if column in reported:
                out.append((self.delta_column(reported[column], column), "delta"))
        return out

    def value(self, row: dict, column: str):
        """The cell of `row` in `column`, the delta columns computed (measured - reported)."""
        for measured, reported in self.compare:
            if column == self.delta_column(measured, reported):
                m, r = _number(row.get(measured)), _number(row.get(reported))
                return None if m is None or r is None else m - r
        return row.get(column)

    def to_json(self) -> dict:
        return {"title": self.title, "slug": self.slug, "columns": list(self.columns), "notes": self.notes,
                "meta": self.meta, "compare": [list(p) for p in self.compare],
                "rows": [{c: self.value(r, c) for c, _ in self.shown_columns()} for r in self.rows],
                "provenance": list(self.provenance)}

    def to_frame(self) -> pd.DataFrame:
        columns = [c for c, _ in self.shown_columns()]
        return pd.DataFrame([[self.value(r, c) for c in columns] for r in self.rows], columns=columns)


@dataclass(frozen=True, kw_only=True)
class SitePage:
    """One page: its tables, its figures (png/svg/jpg paths, inlined) and Markdown documents shown as text."""

    title: str
    slug: str
    tables: tuple[SiteTable, ...] = ()
    figures: tuple[Path, ...] = ()
    documents: tuple[tuple[str, str], ...] = ()  # (title, text)
    notes: str = ""
    figures_first: bool = False  # figures above the tables (a board's plot above its rows)

    def __post_init__(self):
        object.__setattr__(self, "tables", tuple(self.tables))
        object.__setattr__(self, "figures", tuple(Path(f) for f in self.figures))
        object.__setattr__(self, "documents", tuple(tuple(d) for d in self.documents))
        if not SLUG.match(self.slug) or self.slug == "index":
            raise UserError(f"site page slug {self.slug!r} is not usable; use lower-case letters, digits, '-', '_' "
                            "(and not 'index')")
        for figure in self.figures:
            if Path(figure).suffix.lower() not in FIGURE_TYPES:
                raise UserError(f"site figure {str(figure)!r} is not an image; give one of {', '.join(FIGURE_TYPES)}")


def _format(value, decimals: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _sort_key(value) -> str:
    """What the table script sorts on: numbers as numbers, the rest as text, missing values empty."""
    if value is None:
        return ""
    number = _number(value)
    return repr(number) if number is not None else _format(value, DEFAULT_DECIMALS)


def _numeric_key(key: str) -> bool:
    """Whether a sort key is a number (right-aligned cell)."""
    try:
        return key != "" and math.isfinite(float(key))
    except ValueError:
        return False


def _data_uri(path: Path) -> str:
    kind = FIGURE_TYPES[path.suffix.lower()]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.reports", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.globals["format_cell"] = lambda table, row, column: _format(
        table.value(row, column), table.decimals.get(column, DEFAULT_DECIMALS))
    env.globals["sort_key"] = lambda table, row, column: _sort_key(table.value(row, column))
    env.globals["pretty"] = lambda value: _format(value, 6) if not isinstance(value, (dict, list)) \
        else json.dumps(value, indent=1, sort_keys=True, default=str)
    env.globals["is_num"] = _numeric_key
    env.globals["delta_class"] = lambda value: "" if _number(value) is None else ("up" if value > 0 else "down" if value < 0 else "")
    return env


def _asset(name: str) -> str:
    return (Path(__file__).parent / "templates" / name).read_text()


def _pages(title: str, pages, tables, figures) -> list[SitePage]:
    """The pages given, then one page per loose table and one page for the loose figures."""
    out = list(pages)
    out += [SitePage(title=t.title, slug=f"table-{t.slug}", tables=(t,), notes=t.notes) for t in tables]
    if figures:
        out.append(SitePage(title="Figures", slug="figures", figures=tuple(Path(f) for f in figures)))
    seen: set[str] = set()
    for page in out:
        if page.slug in seen:
            raise UserError(f"site {title!r}: two pages share the slug {page.slug!r}; give each a distinct slug")
        seen.add(page.slug)
        names = [t.slug for t in page.tables]
        if len(set(names)) != len(names):
            raise UserError(f"site page {page.slug!r}: two tables share a slug; give each a distinct slug")
    return out


def _clear(out_dir: Path) -> None:
    """Remove a previous site in `out_dir` (only a folder this module wrote: it holds MARKER)."""
    if not out_dir.exists():
        return
    if not (out_dir / MARKER).exists():
        if any(out_dir.iterdir()):
            raise UserError(f"{out_dir} exists and is not an authbench site; give an empty or new folder for the site")
        return
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def write_site(out_dir: Path, *, title: str, pages=(), tables=(), figures=(), downloads=(), about: str = "",
               provenance: dict | None = None) -> list[Path]:
    """Write the site into `out_dir` (replacing a site written there before) and return its files,
    index.html first. `downloads` are files copied to downloads/ and linked from the index."""
    out_dir = Path(out_dir)
    all_pages = _pages(title, pages, tables, figures)
    downloads = [Path(p) for p in downloads]
    missing = [p for p in [*downloads, *(f for pg in all_pages for f in pg.figures)] if not Path(p).is_file()]
    if missing:
        raise UserError(f"site {title!r}: file {str(missing[0])!r} does not exist; give existing report files")
    names = [p.name for p in downloads]
    if len(set(names)) != len(names):
        raise UserError(f"site {title!r}: two downloads share a file name; give each a distinct name")
    for page in all_pages:  # slugs name files: each one plain part (bench.paths), checked before anything is cleared
        safe_part(f"{page.slug}.html", "site page slug")
        for table in page.tables:
            safe_part(f"{page.slug}--{table.slug}.csv", "site table slug")
    _clear(out_dir)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by bench.reports.site; the folder is replaced on each write\n")
    written: list[Path] = []
    env, assets = _environment(), {"css": _asset("site.css"), "js": _asset("site.js")}
    nav = [(p.title, f"{p.slug}.html") for p in all_pages]
    for page in all_pages:
        for table in page.tables:
            stem = out_dir / "data" / f"{page.slug}--{table.slug}"
            table.to_frame().to_csv(stem.with_suffix(".csv"), index=False)
            stem.with_suffix(".json").write_text(json.dumps(table.to_json(), indent=1, default=str) + "\n")
            written += [stem.with_suffix(".csv"), stem.with_suffix(".json")]
        figures = [(Path(f).name, _data_uri(Path(f))) for f in page.figures]
        html = env.get_template("page.html.j2").render(site_title=title, page=page, figures=figures, nav=nav,
                                                       assets=assets, current=f"{page.slug}.html")
        path = out_dir / f"{page.slug}.html"
        path.write_text(html)
        written.append(path)
    if downloads:
        (out_dir / "downloads").mkdir(exist_ok=True)
        for src in downloads:
            shutil.copyfile(src, out_dir / "downloads" / src.name)
            written.append(out_dir / "downloads" / src.name)
    index = out_dir / "index.html"
    index.write_text(env.get_template("index.html.j2").render(
        site_title=title, pages=all_pages, nav=nav, assets=assets, current="index.html", about=about,
        provenance=provenance or {}, downloads=[(p.name, f"downloads/{p.name}", p.stat().st_size) for p in downloads]))
    return [index, *written]


__all__ = ["SitePage", "SiteTable", "slugify", "write_site"]
