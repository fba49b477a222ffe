"""Each method's closest figure from its paper, beside its headline on the digits boards (issue 23, "Done means").

The figures are data (bench/reports/reported.toml), validated here: every `method` is a registered defense or attack,
every figure names a paper with its authors, title and venue, and its value is either the text the paper prints
(with the words around it) or a cell of one of the harness's own reported tables (`builtin`), read from there and
never typed twice. A method whose paper figure could not be read carries an explicit `not_found` entry with what was
searched, and every registered method of the six families has one or the other (tests/test_reported.py).

Reported figures are kept apart from measured ones: `rows()` pairs each method's measured headline, read from the
shipped boards (bench.reports.families.shipped_boards), with its reported figure, and the overview renders them in
separate columns, the reported one labelled "reported by the paper".

    python -m bench.reports.reported     # print the table (Markdown)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from baselines.report import REPORTED as NE_TABLE3_REPORTED
from bench.attacks import ATTACKS
from bench.core.errors import UserError, script_main
from bench.defenses import DEFENSES
from bench.ntl.attacks import ATTACKS as DOMAIN_ATTACKS
from bench.reports.corelocker import REPORTED as CORELOCKER_REPORTED
from bench.reports.family_data import FAMILIES, ROOT, family_methods, shipped_boards
from bench.reports.fingerprint import REPORTED_AUC, REPORTED_DATASETS, REPORTED_DECIMALS
from bench.reports.ne_reported import REPORTED as NE_REPORTED
from bench.reports.papers import paper_of

PATH = Path(__file__).with_name("reported.toml")
REPORTED_LABEL = "reported by the paper"

PAPER_KEYS = ("key", "authors", "title", "venue", "arxiv", "link")
FIGURE_KEYS = ("method", "family", "paper", "metric", "dataset", "table", "row", "column", "measures", "beside",
               "source")
FIGURE_OPTIONAL = ("value", "text", "builtin", "note")
NOT_FOUND_KEYS = ("method", "family", "paper", "reason", "searched")


@dataclass(frozen=True, kw_only=True)
class Paper:
    key: str
    authors: str
    title: str
    venue: str
    arxiv: str = ""
    link: str = ""

    @property
    def citation(self) -> str:
        where = self.venue + (f", arXiv {self.arxiv}" if self.arxiv else "")
        return f'{self.authors}, "{self.title}", {where}'


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One figure a paper reports, exactly as printed (`value` is the printed number, `text` the words around it)."""

    method: str
    family: str
    paper: Paper
    value: str
    text: str
    metric: str
    dataset: str
    table: str
    row: str
    column: str
    measures: str
    beside: str  # the digits-board metric (a key of the method's board row) the figure stands beside
    source: str
    note: str = ""
    builtin: str = ""  # which harness table the value was read from, "" when typed from the paper's text here

    @property
    def where(self) -> str:
        cell = "" if self.row in ("", "-") else f", row '{self.row}'"
        cell += "" if self.column in ("", "-") else f", column '{self.column}'"
        return f"{self.table}{cell}, {self.dataset}"


@dataclass(frozen=True, kw_only=True)
class NotFound:
    method: str
    family: str
    paper: Paper
    reason: str
    searched: str


@dataclass(frozen=True, kw_only=True)
class Reported:
    papers: dict  # key -> Paper
    figures: tuple[Figure, ...]
    not_found: tuple[NotFound, ...]

    def methods(self) -> set[str]:
        return {f.method for f in self.figures} | {n.method for n in self.not_found}


# ---- the harness's own reported tables (each already cites its paper at the paper's precision) ----------------

def _table_no(table: str) -> int:
    """'Table 3' -> 3; anything else -> -1 (no builtin cell then)."""
    try:
        return int(str(table).removeprefix("Table").strip())
    except ValueError:
        return -1


def _ne_table1(f: dict) -> str | None:
    n = _table_no(f["table"])
    hit = [e for e in NE_REPORTED if e["table"] == n and e["dataset"] == f["dataset"] and e["row"] == f["row"]
           and e["column"] == f["column"]]
    return hit[0]["text"] if hit else None


def _corelocker(f: dict) -> str | None:
    n = _table_no(f["table"])
    hit = [e for e in CORELOCKER_REPORTED if e["table"] == n and e["row"] == f["row"] and e["column"] == f["column"]]
    return f"{hit[0]['value']:.{hit[0]['decimals']}f}" if hit else None


def _ne_table3(f: dict) -> str | None:
    hit = [e for e in NE_TABLE3_REPORTED if e["dataset"] == f["dataset"] and e["model"] == f["row"] and e["method"] == f["column"]]
    return hit[0]["value"] if hit and _table_no(f["table"]) == 3 else None


def _mfue_table1(f: dict) -> str | None:
    if _table_no(f["table"]) != 1 or f["row"] not in REPORTED_AUC or f["column"] not in REPORTED_DATASETS \
            or f["dataset"] != f["column"]:
        return None
    return f"{REPORTED_AUC[f['row']][REPORTED_DATASETS.index(f['column'])]:.{REPORTED_DECIMALS}f}"


BUILTINS = {"ne-table1": _ne_table1, "corelocker": _corelocker, "ne-table3": _ne_table3, "mfue-table1": _mfue_table1}


# ---- validation -------------------------------------------------------------------------------------------------

def registered_methods() -> dict[str, str]:
    """Every registered name a figure may stand beside: defenses, attacks and the domain protocol's attacks."""
    out = {name: "attack" for name in DOMAIN_ATTACKS}
    out.update({name: "attack" for name in ATTACKS.names()})
    out.update({name: "defense" for name in DEFENSES.names()})
    return out


def _attacks() -> set[str]:
    return {name for name, kind in registered_methods().items() if kind == "attack"}


def _printed(value) -> str:
    """A TOML number as the paper prints it (72 -> '72', 91.7 -> '91.7')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"value {value!r} is not a number")
    return str(value)


def _where(path: Path, kind: str, i: int, entry: dict) -> str:
    name = entry.get("key") or entry.get("method")
    return f"{path.name}: {kind} {i + 1}" + (f" ({name!r})" if isinstance(name, str) else "")


def _check_keys(entry, required, optional, where):
    if not isinstance(entry, dict):
        raise UserError(f"{where}: must be a table of key = value")
    unknown = sorted(set(entry) - set(required) - set(optional))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(required + optional)}")
    for k in required:
        if k not in entry:
            raise UserError(f"{where}: missing key {k!r}")
        if not isinstance(entry[k], str):
            raise UserError(f"{where}: {k} must be a string, not {entry[k]!r}")
    for k in required:
        if k not in ("arxiv", "link", "row", "column") and not entry[k].strip():
            raise UserError(f"{where}: {k} is empty")


def _own_paper(method: str) -> dict | None:
    try:
        return paper_of(method)
    except (AttributeError, TypeError):
        return None


def _method_family(method: str, family: str, kind: str, where: str) -> None:
    names = [f.name for f in FAMILIES]
    if family not in names:
        raise UserError(f"{where}: unknown family {family!r}; valid: {', '.join(names)}")
    if kind == "defense":
        fam = FAMILIES[names.index(family)]
        methods, others = family_methods(fam)
        if method not in methods + others:
            raise UserError(f"{where}: defense {method!r} is not registered in family {family!r} "
                            f"(its methods: {', '.join(methods)})")


def load(path: Path = PATH) -> Reported:
    """Read and validate reported.toml; any bad entry is a one-line UserError naming it."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{Path(path).name}: not valid TOML ({exc})") from None
    path = Path(path)
    extra = sorted(set(data) - {"paper", "figure", "not_found"})
    if extra:
        raise UserError(f"{path.name}: unknown table {extra[0]!r}; valid: paper, figure, not_found")
    papers: dict[str, Paper] = {}
    for i, entry in enumerate(data.get("paper", [])):
        where = _where(path, "paper", i, entry)
        _check_keys(entry, PAPER_KEYS, (), where)
        if entry["key"] in papers:
            raise UserError(f"{where}: paper key {entry['key']!r} is given twice")
        papers[entry["key"]] = Paper(**entry)
    registered = registered_methods()
    figures, missing, seen = [], [], {}

    def common(entry, where, kind_of):
        method = entry["method"]
        if method not in registered:
            raise UserError(f"{where}: {method!r} is not a registered defense or attack "
                            "(`authbench list defenses`, `authbench list attacks`)")
        _method_family(method, entry["family"], registered[method], where)
        if entry["paper"] not in papers:
            raise UserError(f"{where}: paper {entry['paper']!r} is not a [[paper]] key; valid: {', '.join(papers)}")
        if seen.setdefault(method, kind_of) != kind_of:
            raise UserError(f"{where}: {method!r} has both a figure and a not_found entry; keep one")
        return papers[entry["paper"]]

    for i, entry in enumerate(data.get("figure", [])):
        where = _where(path, "figure", i, entry)
        _check_keys(entry, FIGURE_KEYS, FIGURE_OPTIONAL, where)
        paper = common(entry, where, "figure")
        builtin = entry.get("builtin", "")
        if builtin:
            if "value" in entry or "text" in entry:
                raise UserError(f"{where}: a builtin figure is read from its table; drop value and text")
            if builtin not in BUILTINS:
                raise UserError(f"{where}: unknown builtin {builtin!r}; valid: {', '.join(BUILTINS)}")
            value = BUILTINS[builtin](entry)
            if value is None:
                raise UserError(f"{where}: builtin {builtin!r} has no cell {entry['table']} / {entry['dataset']} / "
                                f"row {entry['row']!r} / column {entry['column']!r}")
            text = value
        else:
            if "value" not in entry or "text" not in entry:
                raise UserError(f"{where}: needs value and text (as the paper prints them), or builtin")
            value = _printed(entry["value"])
            text = entry["text"]
            if not isinstance(text, str) or value not in text:
                raise UserError(f"{where}: text must contain the value as printed ({value!r})")
        own = _own_paper(entry["method"]) if registered[entry["method"]] == "defense" else None
        note = entry.get("note", "")
        if own and own.get("title") and own["title"].lower() != paper.title.lower() and not note:
            raise UserError(f"{where}: paper {paper.key!r} is not the method's own ({own['title']!r}); "
                            "say why in `note`")
        figures.append(Figure(method=entry["method"], family=entry["family"], paper=paper, value=value, text=text,
                              metric=entry["metric"], dataset=entry["dataset"], table=entry["table"],
                              row=entry["row"], column=entry["column"], measures=entry["measures"],
                              beside=entry["beside"], source=entry["source"], note=note, builtin=builtin))
    for i, entry in enumerate(data.get("not_found", [])):
        where = _where(path, "not_found", i, entry)
        _check_keys(entry, NOT_FOUND_KEYS, (), where)
        if seen.get(entry.get("method")) == "not_found":
            raise UserError(f"{where}: {entry['method']!r} has two not_found entries")
        paper = common(entry, where, "not_found")
        missing.append(NotFound(method=entry["method"], family=entry["family"], paper=paper,
                                reason=entry["reason"], searched=entry["searched"]))
    return Reported(papers=papers, figures=tuple(figures), not_found=tuple(missing))


def required_methods() -> list[tuple[str, str]]:
    """(family, method) that must have a figure or a not_found entry: every registered method of the six
    families (controls and reference rows aside) and the attacks that are a paper's method (TransNTL)."""
    return [(f.name, m) for f in FAMILIES for m in family_methods(f)[0] + list(PAPER_ATTACKS.get(f.name, ()))]


def missing_methods(reported: Reported) -> list[str]:
    """The required methods (required_methods) with neither a figure nor a not_found entry: must be empty."""
    have = reported.methods()
    return [f"{m} ({family})" for family, m in required_methods() if m not in have]


# attacks that are a paper's method, listed after their family's defenses
PAPER_ATTACKS = {"non-transferable learning": ("transntl",)}


# ---- measured beside reported -----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Measured:
    """A method's headline on a shipped digits board: its best-ranked row (an attack: the board's leader row)."""

    suite: str
    board: str
    row: str
    rank: int | None
    ranked: int
    headline: str
    value: float | None
    beside: str
    beside_value: float | None
    base_value: float | None  # for an attack's column `metric[attack]`: the row's `metric` without the attack
    source: str


def _suite_boards(suite: str, root: Path, cache: dict) -> tuple[list, Path | None]:
    """[(board, its headline metric, its ranked rows)] of a suite's shipped boards, read once per `cache`."""
    if suite not in cache:
        boards, path = shipped_boards(suite, root)
        cache[suite] = ([(b, b.headline, [r for r in b.rows if r.rank is not None]) for b in boards], path)
    return cache[suite]


def measured(method: str, family: str, beside: str = "", root: Path | None = None, cache: dict | None = None,
             attacks: set[str] | None = None) -> Measured | None:
    """The method's best-ranked row on its family's shipped boards (an attack: the leader row of the board); `cache`
    and `attacks` spare re-reading the boards and the registries for every method of a table."""
    root = root or ROOT
    cache = {} if cache is None else cache
    attack = method in (_attacks() if attacks is None else attacks)
    fam = next(f for f in FAMILIES if f.name == family)
    best = None
    for suite, name in fam.boards:
        boards, path = _suite_boards(suite, root, cache)
        for b, headline, ranked in boards:
            if b.key.board != name:
                continue
            pool = ranked if attack else [r for r in ranked if r.defense == method]
            if not pool:
                continue
            row = min(pool, key=lambda r: r.rank)
            if best is None or row.rank < best[1].rank:
                best = (b, row, headline, path, len(ranked))
    if best is None:
        return None
    b, row, headline, path, n = best
    return Measured(suite=b.key.suite, board=b.key.slug, row=row.name, rank=row.rank, ranked=n, headline=headline,
                    value=row.values.get(headline), beside=beside,
                    beside_value=row.values.get(beside) if beside else None,
                    base_value=row.values.get(beside.split("[", 1)[0]) if "[" in beside else None,
                    source=str(path.relative_to(root)) if path is not None else "-")


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if metric.startswith(("auc", "worst_auc", "tpr", "worst_tpr")) else f"{v:.1f}"


@dataclass(frozen=True, kw_only=True)
class Line:
    """One line of the table: a method, its measured digits headline, and its paper's figure (or why none)."""

    family: str
    method: str
    measured: Measured | None
    figure: Figure | None
    not_found: NotFound | None

    @property
    def digits(self) -> str:
        m = self.measured
        if m is None:
            return "(no ranked row on a shipped board)"
        who = f"leader `{m.row}`, " if m.row != self.method else ""
        return (f"{who}{m.headline} {_fmt(m.value, m.headline)} (rank {m.rank} of {m.ranked}, `{m.board}`, "
                f"{m.source})")

    @property
    def beside(self) -> str:
        m = self.measured
        if self.figure is None or m is None:
            return "-"
        metric = self.figure.beside
        text = f"{metric} = {_fmt(m.beside_value, metric)}"
        base = metric.split("[", 1)[0]
        if "[" in metric and m.base_value is not None:  # an attack's column: show the unattacked value first
            text = f"{base} = {_fmt(m.base_value, base)} -> {text}"
        return text + (f" (`{m.row}`)" if m.row != self.method else "")

    @property
    def reported(self) -> str:
        if self.figure is None:
            return f"not found: {self.not_found.reason}" if self.not_found else "-"
        f = self.figure
        quoted = f" (\"{f.text}\")" if f.text != f.value else ""
        return f"{f.value}{quoted}: {f.metric}"

    @property
    def where(self) -> str:
        if self.figure is None:
            return f"searched: {self.not_found.searched}" if self.not_found else "-"
        f = self.figure
        return f"{f.where}; {f.measures}" + (f"; {f.note}" if f.note else "")

    @property
    def paper(self) -> str:
        p = (self.figure or self.not_found).paper if (self.figure or self.not_found) else None
        if p is None:
            return "-"
        src = f"; read at {self.figure.source}" if self.figure is not None else ""
        return p.citation + src


def rows(reported: Reported | None = None, root: Path | None = None) -> list[Line]:
    """One line per (family, method) required, plus any extra figure, in family order; a method with two figures
    (e.g. NE's authorized and unauthorized cells) has two lines."""
    reported = reported or load()
    out, cache, attacks = [], {}, _attacks()
    for family, method in required_methods():
        figs = [f for f in reported.figures if f.method == method]
        miss = [n for n in reported.not_found if n.method == method]
        if not figs:
            out.append(Line(family=family, method=method, figure=None, not_found=miss[0] if miss else None,
                            measured=measured(method, family, root=root, cache=cache, attacks=attacks)))
        for f in figs:
            out.append(Line(family=family, method=method, figure=f, not_found=None,
                            measured=measured(method, family, f.beside, root=root, cache=cache, attacks=attacks)))
    return out


def markdown(reported: Reported | None = None, root: Path | None = None, lines: list[Line] | None = None) -> str:
    """The table as Markdown (`lines`: rows() already computed)."""
    table = lines if lines is not None else rows(reported, root)
    lines = ["| family | method | headline on digits (measured by authbench; board, file) | digits metric beside the "
             f"paper's figure (measured) | paper's closest figure ({REPORTED_LABEL}; value as printed) | where in the "
             "paper (table, row, column, dataset; what it measures) | paper (citation; where it was read) |",
             "|---|---|---|---|---|---|---|"]
    for x in table:
        cells = (x.family, f"`{x.method}`", x.digits, x.beside, x.reported, x.where, x.paper)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def site_rows(reported: Reported | None = None, root: Path | None = None,
              lines: list[Line] | None = None) -> list[dict]:
    table = lines if lines is not None else rows(reported, root)
    return [{"family": x.family, "method": x.method, "digits headline (measured)": x.digits,
             "beside (measured)": x.beside, f"paper's figure ({REPORTED_LABEL})": x.reported,
             "where in the paper": x.where, "paper": x.paper} for x in table]


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    sys.exit(script_main(lambda: [markdown()]))
