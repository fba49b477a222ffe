"""The overview of the six families (bench.reports.families): methods from the registry, leaders read from the
shipped boards (not typed), docs/families.md kept current, the `families` page of the HTML site."""

from __future__ import annotations

import json
import shutil

from bench.defenses import DEFENSES
from bench.reports.families import (CONTROLS, FAMILIES, ROOT, documented, family_methods, leaders,
                                    overview_markdown, overview_page)
from bench.reports.reported import REPORTED_LABEL
from bench.reports.site import write_site


def test_docs_families_is_the_generated_overview():
    assert documented() == overview_markdown(), (
        "docs/families.md is stale (a board was frozen or a method registered): run "
        "`python -m bench.reports.families --write`")


def test_every_registered_defense_is_in_one_family():
    seen = []
    for family in FAMILIES:
        methods, others = family_methods(family)
        assert methods, family.name
        seen += methods + others
    assert sorted(seen) == sorted(DEFENSES.names())  # none left out, none counted twice
    assert len([n for n in seen if n not in CONTROLS]) >= 24


def test_leaders_are_read_from_the_shipped_boards(tmp_path):
    (tmp_path / "reports" / "leaderboards").mkdir(parents=True)
    source = ROOT / "reports" / "leaderboards" / "unlearnable-digits.json"
    data = json.loads(source.read_text())
    board = data["boards"][0]
    ranked = sorted((r for r in board["rows"] if r.get("rank")), key=lambda r: r["rank"])
    assert len(ranked) >= 2
    (tmp_path / "reports" / "leaderboards" / "unlearnable-digits.json").write_text(json.dumps(data))
    ue = [x for x in leaders(tmp_path) if x.suite == "unlearnable-digits"]
    assert [x.leader for x in ue] == [ranked[0]["name"]]
    assert ue[0].value == ranked[0]["values"]["worst_top1"]
    # the file decides: swap the first two ranks and the leader follows
    ranked[0]["rank"], ranked[1]["rank"] = 2, 1
    (tmp_path / "reports" / "leaderboards" / "unlearnable-digits.json").write_text(json.dumps(data))
    assert [x.leader for x in leaders(tmp_path) if x.suite == "unlearnable-digits"] == [ranked[1]["name"]]
    # a suite whose boards are not shipped under this root says so
    assert {x.leader for x in leaders(tmp_path) if x.suite == "locks-digits"} == {"(no shipped board)"}


def test_the_overview_shows_each_method_beside_its_papers_figure_labelled_reported():
    text = overview_markdown()
    table = text.split(REPORTED_LABEL, 1)[1]
    for method in ("ne-patch", "corelocker", "nnsplitter", "modeldiff", "transntl", "em", "ntl"):
        assert f"| `{method}` |" in table, method
    assert "bench/reports/reported.toml" in text


def test_the_site_has_a_families_page(tmp_path):
    page = overview_page()
    assert [t.slug for t in page.tables] == ["families", "family-leaders", "family-reported"]
    assert len(page.tables[0].rows) == len(FAMILIES)
    assert {r["family"] for r in page.tables[1].rows} == {f.name for f in FAMILIES}
    write_site(tmp_path / "site", title="t", pages=[page])
    html = (tmp_path / "site" / "families.html").read_text()
    assert "Leader of each shipped board" in html and "unlearnable examples" in html
    assert REPORTED_LABEL in html and "91.7" in html  # ModelDiff's abstract figure, labelled reported
    shutil.rmtree(tmp_path / "site")
