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

import sys
from pathlib import Path

from bench.reports.family_data import (CONTROLS, FAMILIES, ROOT, Family, Leader, family_methods, format_value,  # noqa: F401
                                       leaders, shipped_boards)
from bench.reports.reported import REPORTED_LABEL, site_rows
from bench.reports.reported import markdown as reported_markdown
from bench.reports.site import SitePage, SiteTable

BEGIN, END = "<!-- families:begin (python -m bench.reports.families --write) -->", "<!-- families:end -->"


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
                     f"{format_value(x.value, x.headline)} | {x.worst_attack} | {x.ranked} | {x.source} |")
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
