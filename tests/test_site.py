"""The static HTML site (bench.reports.site): content, self-containment, downloads, and a real
headless chromium that sorts and filters a table and takes a screenshot.

The browser test skips only where chromium is not installed; with CI_REQUIRE_BROWSER=1 (CI
installs Debian's chromium and chromium-driver) a missing browser or driver fails it instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.core.errors import UserError  # noqa: E402
from bench.protocols import render  # noqa: E402
from bench.reports.leaderboard import leaderboard  # noqa: E402
from bench.reports.pages import csv_table, json_board_table, report_pages  # noqa: E402
from bench.reports.site import SitePage, SiteTable, write_site  # noqa: E402
from bench.reports.tables import write_csv  # noqa: E402
from test_reports import MODELS, make_row, synthetic_rows  # noqa: E402

DEFENSES = ["ne-patch", "noise", "corelocker", "ne-operator", "fhe", "dp"]
GAPS = [66.1, 0.4, 31.5, 58.0, None, 12.25]  # generated inputs of the site, not results


def small_table() -> SiteTable:
    frame = pd.DataFrame({"defense": DEFENSES, "auth_gap": GAPS, "n_models": [10, 10, 10, 10, 1, 10],
                          "measured": [90.0, 80.0, 70.0, 60.0, 50.0, 40.0],
                          "reported": [91.5, None, 70.0, 55.0, 50.0, 42.0]})
    provenance = [{"suite": "synthetic", "git": f"rev{i}", "cells": 3 + i} for i in range(len(DEFENSES))]
    return SiteTable.from_frame(frame, title="Input authorization board", slug="board", provenance=provenance,
                                notes="Generated for the site test.", meta={"suite": "synthetic"},
                                compare=[("measured", "reported")], decimals={"auth_gap": 2})


def a_figure(tmp_path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    path = tmp_path / "fig_line.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


@pytest.fixture
def site(tmp_path):
    download = tmp_path / "leaderboard.csv"
    download.write_text("defense,auth_gap\nne-patch,66.1\n")
    page = SitePage(title="Boards", slug="boards", tables=(small_table(),), figures=(a_figure(tmp_path),))
    paths = write_site(tmp_path / "site", title="authbench test site", pages=[page], downloads=[download],
                       provenance={"suite": "synthetic", "git": "abc123"})
    return tmp_path / "site", paths


def test_site_pages_tables_figures_and_downloads(site):
    root, paths = site
    assert paths[0] == root / "index.html"
    index = (root / "index.html").read_text()
    assert 'href="boards.html#board"' in index and "Input authorization board" in index
    assert "6 rows × 5 columns" in index and "abc123" in index
    assert 'href="downloads/leaderboard.csv"' in index
    assert (root / "downloads" / "leaderboard.csv").read_text().startswith("defense,auth_gap")
    page = (root / "boards.html").read_text()
    assert page.count("<tr>") == 1 + len(DEFENSES)  # header + one per row
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)
    assert "66.10" in page and 'data-v="66.1"' in page  # shown to its decimals, sorted on the value
    assert page.count("<details><summary>show</summary>") == len(DEFENSES) and "rev5" in page
    # measured vs reported, the delta computed by the site, labelled
    assert "Δ measured − reported" in page and 'data-v="-1.5"' in page and 'data-v="5.0"' in page
    assert 'class="badge reported">reported' in page
    csv = pd.read_csv(root / "data" / "boards--board.csv")
    assert csv.shape == (6, 6) and csv["Δ measured − reported"].iloc[0] == pytest.approx(-1.5)
    assert pd.isna(csv["Δ measured − reported"].iloc[1])
    data = json.loads((root / "data" / "boards--board.json").read_text())
    assert data["provenance"][2] == {"suite": "synthetic", "git": "rev2", "cells": 5}
    assert data["rows"][4]["auth_gap"] is None
    assert 'href="data/boards--board.csv"' in page and 'href="data/boards--board.json"' in page


def test_site_is_self_contained(site):
    """No page fetches anything: no external src/href, no <link> stylesheet, no script src; the
    table script and stylesheet are inlined."""
    root, _ = site
    for path in root.glob("*.html"):
        html = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), path.name
        assert "<link" not in html and not re.search(r"<script[^>]+src", html, re.I)
        assert "@import" not in html and "url(http" not in html
        assert "function sortTable" in html and "tbody tr.hidden" in html
        for href in re.findall(r'href="([^"#]+)', html):  # every relative link resolves inside the site
            assert (root / href).is_file(), (path.name, href)


def test_site_rewrite_replaces_its_own_folder_only(tmp_path, site):
    root, _ = site
    stale = root / "data" / "old--gone.csv"
    stale.write_text("x\n")
    write_site(root, title="again", tables=[small_table()])
    assert not stale.exists() and (root / "table-board.html").exists() and not (root / "boards.html").exists()
    other = tmp_path / "not-a-site"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="is not an authbench site"):
        write_site(other, title="x", tables=[small_table()])
    assert (other / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("bad, message", [
    (dict(slug="Bad Slug"), "not file-safe"),
    (dict(provenance=({"a": 1},)), "1 provenance entries for 2 rows"),
    (dict(compare=(("x", "nope"),)), "compare names column 'nope'"),
])
def test_site_table_rejects_bad_input(bad, message):
    base = dict(title="t", slug="t", columns=("x", "y"), rows=({"x": 1, "y": 2}, {"x": 3, "y": 4}))
    with pytest.raises(UserError, match=message):
        SiteTable(**{**base, **bad})


def test_site_table_takes_a_frame_or_dicts():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]})
    by_frame = SiteTable(title="t", slug="t", columns=(), rows=frame)
    by_dicts = SiteTable(title="t", slug="t", columns=["a", "b"], rows=[{"a": 1, "b": 0.5}, {"a": 2, "b": None}])
    assert by_frame == by_dicts and by_frame.columns == ("a", "b") and by_frame.rows[1] == {"a": 2, "b": None}
    assert isinstance(by_dicts.rows, tuple) and type(by_frame.rows[0]["a"]) is int


def test_site_page_rejects_a_non_image_figure(tmp_path):
    with pytest.raises(UserError, match="is not an image"):
        SitePage(title="p", slug="p", figures=(tmp_path / "table.csv",))


def test_render_writes_the_reports_site_with_row_provenance(tmp_path):
    rows = synthetic_rows(releases=("float",))
    rows += [make_row("ne", "mlp-b", m, 30.0, attack="jpeg(quality=75)") for m in MODELS]
    for r in rows:
        r["provenance"] = {**r["provenance"], "wall_s": 0.5, "forwards": 2, "cache": {"hits": 1, "misses": 1}}
    paths = render(rows, tmp_path, {}, site=True)
    root = tmp_path / "site"
    assert paths[-1] == root / "index.html"
    assert not render(rows, tmp_path / "plain", {})[-1].is_relative_to(tmp_path / "plain" / "site")
    index = (root / "index.html").read_text()
    for page in ("boards.html", "input-authorization.html"):
        assert f'href="{page}"' in index and (root / page).is_file()
    assert not (root / "leaderboard.html").exists()  # one leaderboard page: the boards
    assert 'href="downloads/leaderboard.csv"' in index and (root / "downloads" / "leaderboard.provenance.json").is_file()
    assert not list((root / "downloads").glob("*.png"))  # figures are inlined in their page, not copied
    readable = [json.loads(p.read_text()) for p in sorted((root / "data").glob("boards--*.json"))
                if not p.stem.endswith(("-wide", "-sweep"))]
    assert readable and all(b["rows"] and len(b["provenance"]) == len(b["rows"]) for b in readable)
    first = next(p for b in readable for p in b["provenance"] if "tau=0.0001" in p["params"])  # an NE row
    assert first["git"] == "abc123" and first["cells"] > 0
    # each job's wall time once (every cell of a job records the whole job's 0.5 s), not once per cell
    assert 0 < first["wall_s"] < 0.5 * first["cells"] and (first["wall_s"] / 0.5) == pytest.approx(round(first["wall_s"] / 0.5))
    assert first["authorized"] and first["entry"].startswith("ne|")
    ne_page = (root / "input-authorization.html").read_text()
    assert ne_page.count("data:image/png;base64,") == 1  # fig1_psnr_float.png
    assert "Table 1 (NE shape): cross-model top-1 accuracy" in ne_page and "Attacks on input authorization" in ne_page


def test_a_measured_vs_reported_csv_shows_the_delta(tmp_path):
    frame = pd.DataFrame({"authorized": ["a", "b"], "measured": [50.0, 70.0], "reported": [52.5, None],
                          "delta": [-2.5, None]})
    write_csv(frame, tmp_path / "cmp.csv", {"suite": "s"}, "reported: the paper, Table 1")
    table = csv_table(tmp_path / "cmp.csv")
    assert table.compare == (("measured", "reported"),) and "delta" not in table.columns
    assert table.notes == "reported: the paper, Table 1" and table.meta == {"suite": "s"}
    assert table.to_frame()["Δ measured − reported"].tolist()[0] == pytest.approx(-2.5)


def test_report_csv_text_stays_as_written(tmp_path):
    """psnr_mode `true` is text, not a boolean shown as "yes"; numbers stay numbers, blanks are missing."""
    (tmp_path / "t.csv").write_text("defense,psnr_mode,psnr,n\nne,true,20.0,3\nnoise,,,4\n")
    table = csv_table(tmp_path / "t.csv")
    assert table.rows == ({"defense": "ne", "psnr_mode": "true", "psnr": 20.0, "n": 3},
                          {"defense": "noise", "psnr_mode": None, "psnr": None, "n": 4})


def test_a_json_board_becomes_a_table(tmp_path):
    board = {"kind": "authbench-fingerprint-leaderboard", "provenance": {"suite": "s"}, "rank_by": ["auc", "tpr@1%fpr"],
             "rows": [{"rank": 1, "method": "mfue-w", "auc": 0.98765, "labels_only": False},
                      {"rank": 2, "method": "ipguard", "auc": 0.61, "labels_only": True}]}
    (tmp_path / "fingerprint_leaderboard.json").write_text(json.dumps(board))
    (tmp_path / "fingerprint_leaderboard.md").write_text("x\n\n# Fingerprinting leaderboard\n")
    table = json_board_table(tmp_path / "fingerprint_leaderboard.json")
    assert table.title == "Fingerprinting leaderboard" and table.columns == ("rank", "method", "auc", "labels_only")
    assert table.notes == "Ranked by auc, tpr@1%fpr." and table.meta == {"suite": "s"} and table.decimals["auc"] == 3
    pages = report_pages([], [tmp_path / "fingerprint_leaderboard.json", tmp_path / "fingerprint_leaderboard.md"])
    assert [(p.slug, [t.slug for t in p.tables], p.documents) for p in pages] == \
        [("ownership", ["fingerprint_leaderboard"], ())]


def test_report_html_flag(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(releases=("float",))))
    assert main(["report", str(results), "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "site").exists()
    assert main(["report", str(results), "--out", str(tmp_path / "rep"), "--html"]) == 0
    assert (tmp_path / "rep" / "site" / "index.html").is_file()


# ---- the real browser ----

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("CI_REQUIRE_BROWSER") == "1"


def _browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if path is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = (f"headless browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver; "
                  "pip install selenium")
        if REQUIRED:
            pytest.fail(f"CI_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


def test_site_in_headless_chromium_sorts_filters_and_screenshots(site, tmp_path):
    from selenium.webdriver.common.by import By

    root, _ = site
    driver = _browser()
    try:
        driver.get((root / "boards.html").as_uri())
        table = driver.find_element(By.ID, "t-board")

        def column(i):
            return [r.find_elements(By.TAG_NAME, "td")[i].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
                    if r.is_displayed()]

        assert column(0) == DEFENSES  # as written
        header = table.find_elements(By.CSS_SELECTOR, "thead th button")[1]  # auth_gap
        header.click()
        assert column(1) == ["0.40", "12.25", "31.50", "58.00", "66.10", "–"]  # numeric, missing last
        assert header.find_element(By.XPATH, "..").get_attribute("aria-sort") == "ascending"
        header.click()
        assert column(0) == ["ne-patch", "ne-operator", "corelocker", "dp", "noise", "fhe"]
        table.find_elements(By.CSS_SELECTOR, "thead th button")[0].click()  # text column
        assert column(0) == sorted(DEFENSES)
        box = driver.find_element(By.CSS_SELECTOR, "input.filter")
        box.send_keys("ne-")
        assert column(0) == ["ne-operator", "ne-patch"]
        assert driver.find_element(By.ID, "shown-t-board").text == "2 of 6 rows"
        box.send_keys(" patch")
        assert column(0) == ["ne-patch"]
        details = table.find_element(By.CSS_SELECTOR, "tbody tr:not(.hidden) td.prov details")
        details.find_element(By.TAG_NAME, "summary").click()
        assert details.get_attribute("open") is not None and "rev0" in details.text
        image = driver.find_element(By.TAG_NAME, "img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
        shot = tmp_path / "site_boards.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 5_000 and shot.read_bytes()[:4] == b"\x89PNG"
        driver.get((root / "index.html").as_uri())
        driver.find_element(By.LINK_TEXT, "Input authorization board").click()
        assert driver.current_url.endswith("boards.html#board")
    finally:
        driver.quit()


def _board_site(tmp_path):
    """A reports folder of one input board as a run writes it: six standard attacks (the wide table has a
    column per attack), long parameter strings, a ranked operating point and a PSNR sweep."""
    from bench.core.types import Cell, Provenance, Role, Row
    from bench.reports.boards import build_boards, write_boards
    from bench.reports.pages import write_report_site
    from bench.reports.tables import provenance_of

    attacks = ["jpeg(quality=75)", "crop", "cutout", "reconstruct(epochs=3,samples=512,target=noise2clean,width=16)",
               "project", "project(estimate=whitebox,fill=regress)"]
    prov = Provenance(model_digest=None, authorized_digest=None, input_digest=None, defense_summary=None, versions={},
                      git="g", device="cpu", seed=0, wall_s=0.5, cache={}, forwards=1)
    models = ["cnn-s0", "vit-s0", "mlp-s0", "mixer-s0"]
    rows = []
    for d, base in (("ne-patch", 80.0), ("ne-operator", 60.0), ("noise", 10.0)):
        for psnr, points in ((-10.0, ["none", *attacks]), (20.0, ["none"]), (0.0, ["none"])):
            for a in models[:2]:
                for attack in points:
                    for e in models:
                        top1 = 95.0 if e == a else 95.0 - base + (5.0 if attack != "none" else 0.0)
                        cell = Cell(suite="s", defense=d, params={}, point={"psnr": psnr, "psnr_mode": "true"},
                                    release="float", attack=attack, authorized=a, evaluated=e, trial=0)
                        rows.append(Row.build(protocol="input", cell=cell, key=f"{d}{psnr}{a}{attack}{e}",
                                              suite_digest="0" * 16, role=Role.of(authorized=a, evaluated=e, same_arch=False),
                                              arch={"authorized": a, "evaluated": e}, n=540, provenance=prov,
                                              metrics={"top1": top1}).to_json())
    boards = build_boards(rows, {"input": tuple(attacks)})
    paths = write_boards(boards, tmp_path, provenance_of(rows))
    return write_report_site(rows, tmp_path, paths)[0].parent


def test_the_boards_page_is_the_one_leaderboard_page(tmp_path):
    root = _board_site(tmp_path)
    assert (root / "boards.html").is_file() and not (root / "leaderboard.html").exists()
    html = (root / "boards.html").read_text()
    assert html.count('<details class="wide">') == 1 and "sweep (not ranked)" in html and "<img" in html


def test_boards_page_headline_visible_in_a_1280_px_window(tmp_path):
    from selenium.webdriver.common.by import By

    root = _board_site(tmp_path)
    driver = _browser()
    try:
        driver.set_window_size(1280, 900)
        driver.get((root / "boards.html").as_uri())
        width = driver.execute_script("return window.innerWidth")
        table = driver.find_elements(By.CSS_SELECTOR, "table.sortable")[0]  # the readable board, first
        heads = {h.text.split("\n")[0]: h for h in table.find_elements(By.CSS_SELECTOR, "thead th")}
        for column in ("rank", "defense", "operating point", "worst_auth_gap", "± 95% CI", "worst attack"):
            assert column in heads, list(heads)
        right = driver.execute_script("return arguments[0].getBoundingClientRect().right", heads["worst_auth_gap"])
        assert heads["worst_auth_gap"].is_displayed() and right <= width, (right, width)
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")] \
            == ["1", "2", "3"]  # one row per entry, the sweep in its own table
        wide = driver.find_element(By.CSS_SELECTOR, "details.wide")
        assert wide.get_attribute("open") is None  # every column: behind the toggle
        shot = tmp_path / "boards_1280.png"
        assert driver.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
    finally:
        driver.quit()
