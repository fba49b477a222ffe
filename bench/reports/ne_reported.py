"""The NE paper's own figures for Tables 1, 2, 8 and 9, each a `reported` entry with its citation.

Never mixed into measured cells: reports print them in labelled columns beside the measured
value with the delta (`compare`). A suite maps its model labels to the paper's names
with `[report] paper_models = {"<label>" = "ResNet-50", ...}` (Table 1's rows and columns, Table 2's
rows), `paper_variants = {"<label>" = "ResNet-50", ...}` (Table 2's other-weights columns) and
names the dataset with `paper_dataset = "ImageNet" | "CIFAR-10"`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import UserError
from bench.reports.leaderboard import METRIC_DIRECTIONS
from bench.reports.tables import (BASELINE, cross_model_matrix, measured_line, provenance_of, results_frame,
                                  same_arch_matrix, to_markdown, write_csv)

PAPER = "Non-Transferable Examples (NE) paper"
BACKBONES = ("ResNet-50", "ViT-B", "SwinV2-T", "DeiT-B", "MambaVision-T")
DATASETS = ("CIFAR-10", "ImageNet")
COMPARISON_COLUMNS = ["authorized", "evaluated", "paper row", "paper column", "measured", "reported", "delta"]
COMPARISON_KEYS = ["table", "defense", "params", "psnr_mode", "release"]


def _matrix(table: int, dataset: str, rows: dict[str, list[float]]) -> list[dict]:
    return [
        {"table": table, "dataset": dataset, "row": row, "column": col, "value": value}
        for row, values in rows.items()
        for col, value in zip(BACKBONES, values)
    ]


def _reported() -> list[dict]:
    """Typed from the paper's text; row = authorized (target) model or baseline, column = evaluated."""
    out = []
    t1 = {  # Table 1: cross-model non-transferability at 20 dB; top-1 %
        "CIFAR-10": {
            "Baseline": [98.2, 98.8, 96.1, 96.1, 96.9], "ResNet-50": [97.7, 12.5, 13.6, 9.4, 10.0],
            "ViT-B": [10.5, 98.7, 9.3, 12.1, 9.7], "SwinV2-T": [15.6, 11.7, 88.4, 20.6, 18.8],
            "DeiT-B": [9.4, 9.8, 9.8, 96.1, 5.5], "MambaVision-T": [17.6, 7.0, 13.7, 11.3, 94.5],
        },
        "ImageNet": {
            "Baseline": [80.3, 81.6, 80.9, 79.9, 82.4], "ResNet-50": [80.2, 0.0, 0.1, 0.1, 0.1],
            "ViT-B": [0.0, 81.3, 0.0, 0.0, 0.0], "SwinV2-T": [9.1, 4.3, 71.7, 7.4, 12.9],
            "DeiT-B": [0.0, 0.0, 0.0, 79.3, 1.0], "MambaVision-T": [5.8, 0.0, 1.5, 0.7, 81.0],
        },
    }
    t2 = {  # Table 2: same architecture, other weights (diagonal); cross-architecture off-diagonal
        "CIFAR-10": {
            "ResNet-50": [13.3, 9.4, 8.2, 9.4, 7.8], "ViT-B": [10.1, 9.6, 10.1, 11.5, 9.8],
            "SwinV2-T": [10.5, 10.2, 21.0, 11.3, 14.5], "DeiT-B": [12.5, 9.3, 7.0, 14.8, 10.9],
            "MambaVision-T": [14.5, 5.1, 12.5, 9.8, 8.2],
        },
        "ImageNet": {
            "ResNet-50": [1.2, 0.0, 4.4, 0.0, 0.0], "ViT-B": [0.0] * 5, "SwinV2-T": [0.0] * 5,
            "DeiT-B": [0.0] * 5, "MambaVision-T": [0.0, 0.0, 1.9, 0.0, 0.0],
        },
    }
    for table, data in ((1, t1), (2, t2)):
        for dataset, rows in data.items():
            out += _matrix(table, dataset, rows)
    t8 = {  # Table 8 (App. D.4): PSNR (dB) on VDSR; x~, SR-ResNet black box (N2N), white box (N2C)
        "Gaussian": [15.8, 33.5, 35.9], "NE": [10.2, 10.5, 10.9], "NE (white-box model access)": [10.7, 10.8, 11.1],
    }
    for row, values in t8.items():
        out += [{"table": 8, "dataset": "VDSR", "row": row, "column": col, "value": v}
                for col, v in zip(("released", "noise2noise", "noise2clean"), values)]
    t9 = {"ResNet-50": 10.8, "SwinV2-T": 10.0, "DeiT-B": 10.8, "MambaVision-T": 10.1, "ViT-B (authorized)": 98.7}
    out += [{"table": 9, "dataset": "CIFAR-10", "row": model, "column": "accuracy on NEs after adaptation", "value": v}
            for model, v in t9.items()]  # Table 9 (App. D.5): 3 epochs, batch 64, lr 5e-4, NE basis from ViT-B
    return [{"kind": "reported", "paper": PAPER, "cite": f"{PAPER}, Table {e['table']}, {e['dataset']}, "
             f"row {e['row']!r}, column {e['column']!r}", **e} for e in out]


REPORTED = _reported()


def reported_table(table: int, dataset: str) -> pd.DataFrame:
    """One of the paper's tables as a frame (rows x columns as printed)."""
    entries = [e for e in REPORTED if e["table"] == table and e["dataset"] == dataset]
    frame = pd.DataFrame(entries)
    return frame.pivot(index="row", columns="column", values="value").reindex(
        index=list(dict.fromkeys(e["row"] for e in entries)), columns=list(dict.fromkeys(e["column"] for e in entries)))


def compare(measured: pd.DataFrame, table: int, dataset: str, rows: dict[str, str],
            columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Long table: every measured cell whose row and column map to paper names (`rows`, `columns`:
    label -> paper name; columns default to rows), beside the reported value and the delta
    (measured - reported). `measured` is indexed by authorized label (or the clean baseline row)
    with evaluated labels as columns."""
    reported = reported_table(table, dataset)
    names, columns = {**rows, BASELINE: "Baseline"}, columns or rows
    records = []
    for row_label in measured.index:
        for col_label in measured.columns:
            row, col = names.get(row_label), columns.get(col_label)
            if row in reported.index and col in reported.columns:
                value, paper = measured.loc[row_label, col_label], reported.loc[row, col]
                records.append({"authorized": row_label, "evaluated": col_label, "paper row": row, "paper column": col,
                                "measured": value, "reported": paper, "delta": value - paper})
    return pd.DataFrame.from_records(records, columns=COMPARISON_COLUMNS)


def render_comparison(rows: list[dict], out_dir, report: dict) -> list[Path]:
    """ne_paper_comparison.md: measured Tables 1 and 2 cells beside the paper's, with the delta, for
    every NE section at the paper's 20 dB; needs `paper_models` and `paper_dataset` in [report]."""
    models, dataset = report.get("paper_models"), report.get("paper_dataset")
    variants = report.get("paper_variants") or {}
    if not models or not dataset:
        return []
    if dataset not in DATASETS:
        raise UserError(f"[report] paper_dataset {dataset!r} is not in the NE paper; valid choices: {', '.join(DATASETS)}")
    unknown = sorted((set(models.values()) | set(variants.values())) - set(BACKBONES))
    if unknown:
        raise UserError(f"[report] paper_models or paper_variants map to {unknown[0]!r}; valid paper columns: {', '.join(BACKBONES)}")
    psnr = float(report.get("paper_psnr", 20))
    parts = [measured_line(provenance_of(rows)), "",
             f"# NE Tables 1 and 2: measured vs reported ({dataset}, {psnr:g} dB)", "",
             "`measured`: this run; `reported`: the NE paper (kind `reported`, cite: NE paper, Table, dataset, row, "
             "column); delta = measured - reported, in points of top-1.", ""]
    frame, long = results_frame(rows), []
    frame = frame[frame["defense"].str.startswith("ne-") & (frame["psnr"] == psnr) & (frame["attack"] == "none")]
    sections = frame[["defense", "params", "psnr_mode", "release"]].drop_duplicates().itertuples(index=False)
    for defense, params, mode, release in sections:
        for table, build, columns in ((1, cross_model_matrix, models), (2, same_arch_matrix, variants)):
            measured = build(rows, defense, psnr, release, psnr_mode=mode, params=params).select_dtypes("number")
            cmp = compare(measured, table, dataset, models, columns)
            if not cmp.empty:
                title = defense + (f" ({params})" if params not in ("", "defaults") else "") + f", psnr_mode {mode}, release {release}"
                parts += [f"## Table {table}: {title}", "", to_markdown(cmp, index=False), ""]
                long.append(cmp.assign(table=table, defense=defense, params=params, psnr_mode=mode, release=release))
    path = Path(out_dir) / "ne_paper_comparison.md"
    path.write_text("\n".join(parts))
    body = pd.concat(long, ignore_index=True) if long else pd.DataFrame(columns=COMPARISON_COLUMNS)
    body = body[[*COMPARISON_KEYS, *COMPARISON_COLUMNS]] if long else body
    note = f"{measured_line(provenance_of(rows))} Column `reported` quotes the NE paper ({dataset}, Tables 1 and 2)."
    return [path, *write_csv(body, path.with_suffix(".csv"), provenance_of(rows), note)]


def reference_leaderboard(dataset: str) -> dict:
    """The fixed reference for a paper dataset before anything is measured there: no measured rows,
    the paper's entries for that dataset (Tables 1, 2 and, for CIFAR-10, 9) plus Table 8, each cited."""
    entries = [e for e in REPORTED if e["dataset"] in (dataset, "VDSR")]
    return {"kind": "authbench-leaderboard", "version": 1,
            "provenance": {"note": "reported entries only; measured rows appear when the suite is run on a GPU machine"},
            "metrics": METRIC_DIRECTIONS, "rows": [], "reported": entries}
