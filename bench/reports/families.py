"""The one-page overview of the six families (docs/families.md and the `families` page of every HTML site).

Nothing here is typed by hand but the families themselves (what each protects, its protocol and headline
metric, the boards it ranks on): the methods of a family are read from the defense registry, and the leader
of each board from the shipped boards (`reports/leaderboards/<suite>.json`, the frozen references, in a
checkout; else the boards the package ships, `bench/leaderboards/<suite>.json`; else a suite's shipped
reports, `reports/<suite>/boards.json`). Its last table sets each method's digits headline beside its paper's
closest reported figure (bench.reports.reported, whose data is bench/reports/reported.toml), labelled as reported.

    python -m bench.reports.families            # print the overview (Markdown)
    python -m bench.reports.families --write    # rewrite its section of docs/families.md
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from bench.defenses import DEFENSES
from bench.reports.boards import Board, boards_from_json
from bench.reports.site import SitePage, SiteTable

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- families:begin (python -m bench.reports.families --write) -->", "<!-- families:end -->"


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


def _value(v: float | None, headline: str) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if headline == "worst_auc" else f"{v:.1f}"


def overview_markdown(root: Path = ROOT) -> str:
    lines = ["| family | protects | protocol | headline (board metric) | methods (registered) | "
             "controls / reference rows | doc |", "|---|---|---|---|---|---|---|"]
    total = 0
    for f in FAMILIES:
        methods, others = family_methods(f)
        total += len(methods)
        lines.append(f"| {f.name} | {f.protects} | `{f.protocol}` | {f.headline} | {len(methods)}: "
                     + ", ".join(f"`{m}`" for m in methods) + " | " + (", ".join(f"`{o}`" for o in others) or "-")
                     + f" | [{f.doc}]({f.doc}) |")
    lines += ["", f"{total} registered methods across the six families (`authbench list defenses` lists them with "
              "their papers, and the controls and reference rows).", "",
              "Leader of each shipped board (rank 1; measured by authbench on the offline digits suites, read from the "
              "file named; a board per model set):", "",
              "| family | suite | board | models (authorized) | leader | headline | value | its worst attack | ranked rows "
              "| read from |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in leaders(root):
        lines.append(f"| {x.family} | `{x.suite}` | `{x.board}` | {x.models} | `{x.leader}` | {x.headline} | "
                     f"{_value(x.value, x.headline)} | {x.worst_attack} | {x.ranked} | {x.source} |")
    from bench.reports.reported import markdown as reported_markdown
    lines += ["", "Each method's headline on digits (measured by authbench, read from the shipped boards) beside its "
              "paper's closest figure (**reported by the paper**, on the paper's own data and models - CIFAR-10, "
              "ImageNet, its own benchmark - quoted as printed, never measured here and not comparable cell for cell "
              "with the digits columns). The figures and their citations are data, `bench/reports/reported.toml`; a "
              "method whose paper figure could not be read says so and what was searched:", "", reported_markdown(root=root)]
    return "\n".join(lines)


def overview_page(root: Path = ROOT) -> SitePage:
    """The `families` page of the HTML site: the families, the leader of each shipped board and each method beside
    its paper's closest reported figure."""
    fam_rows = []
    for f in FAMILIES:
        methods, others = family_methods(f)
        fam_rows.append({"family": f.name, "protects": f.protects, "protocol": f.protocol, "headline": f.headline,
                         "methods": len(methods), "registered methods": ", ".join(methods),
                         "controls / reference rows": ", ".join(others) or "-"})
    lead_rows = [{"family": x.family, "suite": x.suite, "board": x.board, "models (authorized)": x.models,
                  "leader": x.leader, "headline": x.headline, "value": x.value, "worst attack": x.worst_attack,
                  "ranked rows": x.ranked, "read from": x.source} for x in leaders(root)]
    families = SiteTable(title="The six families", slug="families", columns=tuple(fam_rows[0]), rows=tuple(fam_rows),
                         notes="Methods are read from the defense registry.")
    lead = SiteTable(title="Leader of each shipped board", slug="family-leaders", columns=tuple(lead_rows[0]),
                     rows=tuple(lead_rows), decimals={"value": 3, "ranked rows": 0},
                     notes="Measured by authbench on the offline digits suites; read from the shipped boards "
                           "(the file named per row), not typed.")
    from bench.reports.reported import REPORTED_LABEL, site_rows
    rep = site_rows(root=root)
    reported = SiteTable(title="Each method on digits beside its paper's closest figure", slug="family-reported",
                         columns=tuple(rep[0]), rows=tuple(rep),
                         notes=f"The digits columns are measured by authbench (read from the shipped boards named); the "
                               f"paper's figure is {REPORTED_LABEL} (quoted as printed, on the paper's data and models, "
                               "with table, row, column and citation), never measured here. Data: "
                               "bench/reports/reported.toml.")
    return SitePage(title="Families: what each protects, its headline, the leader of each board", slug="families",
                    tables=(families, lead, reported))


def write_docs(path: Path = ROOT / "docs" / "families.md", root: Path = ROOT) -> bool:
    """Rewrite the generated section of docs/families.md; True when it changed."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{overview_markdown(root)}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def documented(path: Path = ROOT / "docs" / "families.md") -> str:
    """The generated section as docs/families.md holds it."""
    text = path.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") if BEGIN in text else ""


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    if sys.argv[1:] == ["--write"]:
        print("rewrote docs/families.md" if write_docs() else "docs/families.md is current")
    else:
        print(overview_markdown())
