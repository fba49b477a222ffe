"""The NE paper's reported Tables 1, 2, 8, 9: cited entries, reference leaderboards, measured-vs-reported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.core.errors import UserError
from bench.reports.ne_reported import REPORTED, compare, reference_leaderboard, render_comparison, reported_table
from bench.reports.tables import BASELINE, cross_model_matrix

ROOT = Path(__file__).resolve().parent.parent


def test_every_reported_entry_is_cited_and_labelled():
    assert {e["table"] for e in REPORTED} == {1, 2, 8, 9}
    for e in REPORTED:
        assert e["kind"] == "reported" and f"Table {e['table']}" in e["cite"]
        assert e["row"] in e["cite"] or "not a row" in e["cite"]  # Table 9's 98.7 is in its caption and Sec. 5.3
    table1 = reported_table(1, "ImageNet")
    assert table1.shape == (6, 5) and table1.loc["ViT-B", "ViT-B"] == 81.3


@pytest.mark.parametrize("dataset,name", [("ImageNet", "imagenet"), ("CIFAR-10", "cifar10")])
def test_checked_in_reference_leaderboards_match_the_code(dataset, name):
    stored = json.loads((ROOT / "reports" / "leaderboards" / f"{name}.json").read_text())
    assert stored == json.loads(json.dumps(reference_leaderboard(dataset)))
    assert stored["rows"] == [] and all(e["kind"] == "reported" for e in stored["reported"])


def _row(authorized, evaluated, top1, defense="ne-patch", psnr=20.0):
    arch = {"r50b": "r50"}.get(evaluated, evaluated)  # r50b: ResNet-50 with other weights
    role = "clean" if not authorized else ("authorized" if authorized == evaluated else
                                          "same-arch" if arch == authorized else "unauthorized")
    return {"suite": "s", "suite_digest": "d", "defense": defense, "params": {}, "point": {} if defense == "none" else
            {"psnr": psnr, "psnr_mode": "true"}, "release": "clean" if defense == "none" else "float", "attack": "none",
            "authorized": authorized, "evaluated": evaluated, "role": role,
            "arch": {"authorized": authorized, "evaluated": arch}, "metrics": {"top1": top1, "first_layer_dev": 0.0},
            "encoding": {"psnr_true": psnr, "psnr_nominal": None}, "cost": None, "attack_stats": None,
            "provenance": {"git": "g", "versions": {}}}


ROWS = [_row("", "r50", 80.0, "none"), _row("", "vit", 81.0, "none"),
        _row("r50", "r50", 79.0), _row("r50", "vit", 1.0), _row("vit", "r50", 0.5), _row("vit", "vit", 81.0)]
VARIANT_ROWS = ROWS + [_row("", "r50b", 79.5, "none"), _row("r50", "r50b", 2.0), _row("vit", "r50b", 0.3)]


def test_measured_cells_sit_beside_reported_ones_with_the_delta():
    measured = cross_model_matrix(ROWS, "ne-patch", 20.0, "float").select_dtypes("number")
    cmp = compare(measured, 1, "ImageNet", {"r50": "ResNet-50", "vit": "ViT-B"})
    cell = cmp[(cmp["authorized"] == "r50") & (cmp["evaluated"] == "r50")].iloc[0]
    assert (cell["measured"], cell["reported"]) == (79.0, 80.2)
    assert cell["delta"] == pytest.approx(-1.2)
    baseline = cmp[(cmp["authorized"] == BASELINE) & (cmp["evaluated"] == "vit")].iloc[0]
    assert baseline["reported"] == 81.6 and len(cmp) == 6


def test_comparison_report_needs_paper_names(tmp_path):
    assert render_comparison(ROWS, tmp_path, {}) == []
    path, csv, sidecar = render_comparison(ROWS, tmp_path, {"paper_dataset": "ImageNet", "paper_models": {"r50": "ResNet-50"}})
    assert "| r50 " in path.read_text() and "80.2" in path.read_text()
    frame = pd.read_csv(csv)  # the same cells as a standard CSV, for the site's measured-vs-reported delta
    assert list(frame.columns[:5]) == ["table", "defense", "params", "psnr_mode", "release"]
    assert {"measured", "reported", "delta"} <= set(frame.columns) and 80.2 in frame["reported"].tolist()
    assert frame["delta"].tolist() == pytest.approx((frame["measured"] - frame["reported"]).tolist())
    assert "reported" in json.loads(sidecar.read_text())["note"]
    with pytest.raises(UserError, match="valid paper columns"):
        render_comparison(ROWS, tmp_path, {"paper_dataset": "ImageNet", "paper_models": {"r50": "ResNet-5O"}})
    with pytest.raises(UserError, match="valid choices: CIFAR-10, ImageNet"):
        render_comparison(ROWS, tmp_path, {"paper_dataset": "VDSR", "paper_models": {"r50": "ResNet-50"}})


def test_table2_maps_other_weights_columns_apart_from_table1(tmp_path):
    report = {"paper_dataset": "ImageNet", "paper_models": {"r50": "ResNet-50", "vit": "ViT-B"},
              "paper_variants": {"r50b": "ResNet-50"}}
    path = render_comparison(VARIANT_ROWS, tmp_path, report)[0]
    text = path.read_text()
    table1, table2 = text.split("## Table 2")
    assert "r50b" not in table1  # a variant is no Table 1 column
    (line,) = [l for l in table2.splitlines() if l.startswith("| r50 ") and "r50b" in l]
    assert [c.strip() for c in line.strip("|").split("|")] == ["r50", "r50b", "ResNet-50", "ResNet-50", "2.0", "1.2", "0.8"]


def test_citations_name_authors_title_arxiv_and_the_987_is_no_table_9_row():
    from bench.reports.ne_reported import CITATION

    assert CITATION.startswith("Zihan Wang, Zhiyong Ma, Zhongkui Ma, Shuofeng Liu, Akide Liu, Derui Wang, Minhui Xue, "
                               "Guangdong Bai, ") and "Catch-Only-One" in CITATION and "arXiv 2510.10982" in CITATION
    assert all(e["cite"].startswith(CITATION) for e in REPORTED)
    (auth,) = [e for e in REPORTED if e["table"] == 9 and e["value"] == 98.7]
    assert "caption and Sec. 5.3" in auth["cite"] and "not a row" in auth["cite"]
    assert all("caption" not in e["cite"] for e in REPORTED if e["table"] == 9 and e["value"] != 98.7)
    assert {e["text"] for e in REPORTED if e["table"] == 1 and e["row"] == "Baseline"} >= {"98.2", "80.3"}


def test_comparison_of_a_random_weights_run_is_labelled_so(tmp_path):
    rows = [{**r, "suite": "imagenet-random-weights"} for r in ROWS]
    path = render_comparison(rows, tmp_path, {"paper_dataset": "ImageNet", "paper_models": {"r50": "ResNet-50"}})[0]
    text = path.read_text()
    assert "RANDOM WEIGHTS" in text and "not comparable" in text and "measured vs reported" not in text
    path = render_comparison(ROWS, tmp_path, {"paper_dataset": "ImageNet", "paper_models": {"r50": "ResNet-50"}})[0]
    assert "RANDOM WEIGHTS" not in path.read_text()


def test_paper_code_rows_say_the_papers_figures_come_from_them(tmp_path):
    code = [{**r, "point": {**r["point"], "psnr_mode": "paper-code", "evaluation": "paper-code"}} if r["defense"] != "none"
            else r for r in ROWS]
    path = render_comparison(ROWS + code, tmp_path, {"paper_dataset": "ImageNet", "paper_models": {"r50": "ResNet-50"}})[0]
    sections = path.read_text().split("## Table 1: ")[1:]
    assert len(sections) == 2
    (marked,) = [s for s in sections if "evaluation=paper-code" in s.splitlines()[0]]
    assert "The paper's figures come from this setting" in marked
    assert all("come from this setting" not in s for s in sections if s is not marked)


def _task_row(task, defense, release, authorized, evaluated, top1=None, **metrics):
    return {"task": task, "defense": defense, "release": release, "authorized": authorized, "evaluated": evaluated,
            "role": "authorized" if authorized == evaluated else "unauthorized", "params": {}, "suite": "syn",
            "metrics": {"top1": top1, **metrics}, "provenance": {"git": "deadbeef", "suite_digest": "d"}}


@pytest.mark.parametrize("table", [7, 4])
def test_tables_4_and_7_keep_the_papers_rows_in_their_own_labelled_table(tmp_path, table):
    """The paper's blocks are a section and a CSV of their own, cited; the measured table and CSV hold measured
    rows only (no row marked by a suffix)."""
    import pandas as pd

    from bench.reports.ne_tasks import render_glue_tables, render_mmbench_tables

    if table == 7:
        rows = [_task_row(t, d, r, a, e, 70.0 + i) for i, (t, d, r, a, e) in enumerate([
            ("cola", "none", "clean", "", "bert"), ("cola", "ne-text", "embedding", "bert", "bert"),
            ("cola", "none", "clean", "", "roberta"), ("cola", "ne-text", "embedding", "bert", "roberta")])]
        paths = render_glue_tables(rows, tmp_path, {"paper_models": {"bert": "BERT-base"}})
        name, value = "table7_glue", "54.2"  # BERT-base CoLA baseline
    else:
        groups = {g: 0.5 for g in ("Overall", "AR", "CP", "FP-C", "FP-S", "LR", "RR")}
        rows = [_task_row("mmbench", d, r, a, e, **groups) for d, r, a, e in [
            ("none", "clean", "", "intern"), ("ne-vlm", "png", "intern", "intern"),
            ("none", "clean", "", "qwen"), ("ne-vlm", "png", "intern", "qwen")]]
        paths = render_mmbench_tables(rows, tmp_path, {"paper_models": {"intern": "InternVL3-1B"}})
        name, value = "table4_mmbench", "72.7"  # InternVL3-1B Overall baseline
    md = (tmp_path / f"{name}.md").read_text()
    measured, reported = md.split("## Reported by the paper (not measured here)")
    assert "(reported)" not in measured and value not in measured and value in reported
    assert "Zihan Wang, Zhiyong Ma" in reported and f"Table {table}" in reported
    csv = pd.read_csv(tmp_path / f"{name}.csv")
    assert not csv["row"].astype(str).str.contains("reported").any()
    quoted = pd.read_csv(tmp_path / f"{name}_reported.csv")
    assert set(quoted["kind"]) == {"reported"} and quoted["cite"].str.startswith("Zihan Wang").all()
    assert tmp_path / f"{name}_reported.csv" in paths
