"""bench/reports/reported.toml: each method's paper figure beside its digits headline (issue 23, "Done means").

The file parses; every method is registered; every figure names a paper with authors, title and venue and is either
the paper's printed text (with its address) or a cell of the harness's own reported tables; citations match the
defense classes'; bad entries are one-line errors; every registered method of the six families has a figure or an
explicit not_found; the rendered overview shows each figure under the "reported by the paper" label, apart from the
measured digits columns."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from bench.core.errors import UserError
from bench.reports.families import ROOT, overview_page
from bench.reports.papers import paper_of
from bench.reports.reported import (BUILTINS, PATH, REPORTED_LABEL, load, markdown, measured, missing_methods,
                                    registered_methods, required_methods, rows, site_rows)
from bench.reports.site import write_site


@pytest.fixture(scope="module")
def reported():
    return load()


@pytest.fixture(scope="module")
def lines(reported):
    return rows(reported)


def test_the_file_parses_and_every_method_is_registered(reported):
    registered = registered_methods()
    assert len(reported.figures) >= 15 and len(reported.not_found) >= 10
    for entry in reported.figures + reported.not_found:
        assert entry.method in registered, entry.method
        assert entry.paper.authors.count(",") >= 1 or entry.paper.key in ("key-transform",), entry.paper.key
        assert entry.paper.title and entry.paper.venue, entry.paper.key
    # the three papers' figures found in this change by reading their text, each with the address read at
    typed = {f.method: f for f in reported.figures if not f.builtin}
    assert set(typed) >= {"nnsplitter", "modeldiff", "transntl"}
    for f in typed.values():
        assert f.value in f.text and f.source.startswith("https://"), f.method


def test_builtin_figures_are_read_from_the_harness_tables_not_typed(reported):
    from bench.reports.fingerprint import REPORTED_AUC
    from bench.reports.ne_reported import REPORTED as NE
    builtin = [f for f in reported.figures if f.builtin]
    assert {f.builtin for f in builtin} == set(BUILTINS)
    ipguard = next(f for f in builtin if f.method == "ipguard")
    assert ipguard.value == f"{REPORTED_AUC['ipguard'][0]:.2f}" and ipguard.note  # MFUE's report, not IPGuard's own
    cell = next(e for e in NE if e["table"] == 1 and e["dataset"] == "CIFAR-10" and e["row"] == "ResNet-50"
                and e["column"] == "SwinV2-T")
    assert any(f.method == "ne-patch" and f.value == cell["text"] for f in builtin)
    raw = tomllib.loads(PATH.read_text())["figure"]
    assert all("value" not in e and "text" not in e for e in raw if "builtin" in e)


def test_citations_match_the_defense_classes(reported):
    by_title = {p.title.lower(): p for p in reported.papers.values()}
    checked = 0
    for entry in reported.figures + reported.not_found:
        if registered_methods()[entry.method] != "defense":
            continue
        own = paper_of(entry.method)
        assert own and own.get("authors") and own.get("title"), f"{entry.method}: its class states no full paper"
        paper = by_title.get(own["title"].lower())
        assert paper is not None, f"{entry.method}: its paper {own['title']!r} has no [[paper]] entry"
        assert paper.authors == own["authors"], entry.method
        checked += 1
    assert checked >= 25


def test_every_method_of_the_six_families_has_a_figure_or_a_not_found(reported):
    assert missing_methods(reported) == []
    required = {m for _, m in required_methods()}
    assert {"ntl", "cuti", "sophon", "transntl", "em", "rem", "tap", "lsp", "modeldiff", "sac", "deepjudge", "zest",
            "passport", "key-transform", "nnsplitter"} <= required
    # the check bites: drop one method's entry and it is named
    less = type(reported)(papers=reported.papers, figures=tuple(f for f in reported.figures if f.method != "modeldiff"),
                          not_found=reported.not_found)
    assert missing_methods(less) == ["modeldiff (ownership verification (fingerprints))"]


def test_not_found_entries_say_why_and_what_was_searched(reported):
    for n in reported.not_found:
        assert len(n.reason) > 20 and n.searched, n.method
    assert {n.method for n in reported.not_found} >= {"ntl", "em", "passport"}


PAPER = '''[[paper]]
key = "p"
authors = "A. One, B. Two"
title = "NNSplitter: An Active Defense Solution for DNN Model via Automated Weight Obfuscation"
venue = "ICML 2023"
arxiv = ""
link = ""
'''
FIGURE = '''[[figure]]
method = "nnsplitter"
family = "model authorization (locks)"
paper = "p"
value = 10
text = "can drop to 10%"
metric = "m"
dataset = "d"
table = "Abstract"
row = "-"
column = "-"
measures = "x"
beside = "unauthorized_worst"
source = "https://example.org"
'''


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.replace('method = "nnsplitter"', 'method = "no-such"'), "'no-such' is not a registered"),
    (lambda s: s.replace('measures = "x"', 'measures = "x"\ncolour = "red"'), "unknown key 'colour'"),
    (lambda s: s.replace('paper = "p"', 'paper = "q"'), "paper 'q' is not a [[paper]] key"),
    (lambda s: s.replace('authors = "A. One, B. Two"\n', ''), "missing key 'authors'"),
    (lambda s: s.replace('venue = "ICML 2023"', 'venue = ""'), "venue is empty"),
    (lambda s: s.replace('text = "can drop to 10%"', 'text = "can drop a lot"'), "must contain the value as printed"),
    (lambda s: s.replace('value = 10\n', ''), "needs value and text"),
    (lambda s: s.replace('value = 10', 'value = 10\nbuiltin = "mfue-table1"'), "drop value and text"),
    (lambda s: s.replace('value = 10\ntext = "can drop to 10%"', 'builtin = "nope"'), "unknown builtin 'nope'"),
    (lambda s: s.replace('value = 10\ntext = "can drop to 10%"', 'builtin = "mfue-table1"'), "has no cell"),
    (lambda s: s.replace('family = "model authorization (locks)"', 'family = "locks"'), "unknown family 'locks'"),
    (lambda s: s.replace('family = "model authorization (locks)"', 'family = "baselines"'),
     "'nnsplitter' is not registered in family 'baselines'"),
    (lambda s: s.replace('title = "NNSplitter: An Active', 'title = "Another'), "say why in `note`"),
    (lambda s: s + '[[not_found]]\nmethod = "nnsplitter"\nfamily = "model authorization (locks)"\npaper = "p"\n'
                   'reason = "r"\nsearched = "s"\n', "both a figure and a not_found"),
    (lambda s: s + '[[note]]\nx = 1\n', "unknown table 'note'"),
    (lambda s: s.replace('[[figure]]', '[figure'), "not valid TOML"),
])
def test_bad_entries_are_one_line_errors_naming_the_entry(tmp_path, edit, expected):
    good = tmp_path / "good.toml"
    good.write_text(PAPER + FIGURE)
    assert [f.value for f in load(good).figures] == ["10"]
    bad = tmp_path / "reported.toml"
    bad.write_text(edit(PAPER + FIGURE))
    with pytest.raises(UserError) as err:
        load(bad)
    message = str(err.value)
    assert "\n" not in message and expected in message and message.startswith("reported.toml"), message


def test_the_rendered_table_shows_each_figure_labelled_and_apart_from_the_measured_columns(reported, lines):
    text = markdown(lines=lines)
    assert REPORTED_LABEL in text.splitlines()[0]
    for f in reported.figures:
        assert f"| `{f.method}` |" in text and f.value in text and f.paper.authors in text, f.method
    for n in reported.not_found:
        assert f"not found: {n.reason}" in text, n.method
    for line in lines:  # the digits columns hold the board's numbers, the reported column the paper's
        m = line.measured
        assert f"{m.headline} {m.value:.{3 if 'auc' in m.headline else 1}f} (rank {m.rank} of" in line.digits
        if line.figure is not None:
            assert line.reported.startswith(line.figure.value) and REPORTED_LABEL not in line.digits
    site = site_rows(lines=lines)
    assert all(r[f"paper's figure ({REPORTED_LABEL})"] for r in site)


def test_the_digits_columns_are_read_from_the_shipped_boards(tmp_path, reported):
    # measured from the boards' file: change a row's headline there and the digits column follows, the reported
    # column does not
    (tmp_path / "reports" / "leaderboards").mkdir(parents=True)
    data = json.loads((ROOT / "reports" / "leaderboards" / "locks-digits.json").read_text())
    for board in data["boards"]:
        for row in board["rows"]:
            if row["defense"] == "nnsplitter":
                row["values"]["worst_auth_gap"] = 12.345
                row["values"]["unauthorized_worst"] = 54.321
    (tmp_path / "reports" / "leaderboards" / "locks-digits.json").write_text(json.dumps(data))
    m = measured("nnsplitter", "model authorization (locks)", "unauthorized_worst", root=tmp_path)
    assert m.value == 12.345 and m.beside_value == 54.321 and m.source == "reports/leaderboards/locks-digits.json"
    here = {x.method: x for x in rows(reported, tmp_path)}
    line = here["nnsplitter"]
    assert "12.3" in line.digits and "54.3" in line.beside and line.reported.startswith("10 (")
    # a suite not shipped under the root says so rather than showing a number
    assert measured("ntl", "non-transferable learning", root=tmp_path) is None
    assert here["ntl"].digits.startswith("(no ranked row")


def test_the_site_page_carries_the_reported_table(tmp_path):
    page = overview_page()
    table = next(t for t in page.tables if t.slug == "family-reported")
    assert {r["method"] for r in table.rows} >= {m for _, m in required_methods()}
    write_site(tmp_path / "site", title="t", pages=[page])
    html = (tmp_path / "site" / "families.html").read_text()
    assert REPORTED_LABEL in html and "up to 72% target-domain improvements" in html
    shutil.rmtree(tmp_path / "site")
