"""NE Table 7 (GLUE) and Table 4 (MMBench) from measured rows; the paper's values in their own `reported` tables.

Reading of the paper's tables used here (the paper does not spell it out for Table 7):
- Table 7, block = one model m: "Baseline" = m on clean text; "NE" = m on the release made for m
  (authorized); "Unauthorized" = m on a release made for another model. We add the control row
  "delta = 0 control" = m on the other model's *unperturbed* embedding output: with different
  tokenizers and embedding tables that alone can break m, and the gap between this control and
  "Unauthorized" is what NE itself adds.
- Table 4: one table per authorized model a; block a (authorized) and block of each other model
  (unauthorized), rows "Baseline" (clean) and "NE" (on a's release); Overall and AR/CP/FP-C/FP-S/LR/RR.
Suites map their labels to the paper's column names with [report] paper_models = {label = "BERT-base", ...}.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.reports.ne_reported import CITATION
from bench.reports.tables import measured_line, provenance_of, to_markdown, write_csv

PAPER = "Non-Transferable Examples (NE) paper"
GLUE_COLUMNS = {"cola": "CoLA", "mnli": "MNLI", "qnli": "QNLI", "qqp": "QQP", "rte": "RTE", "sst2": "SST2", "stsb": "STSB",
                "mrpc": "MRPC", "wnli": "WNLI"}
MMB_GROUPS = ("Overall", "AR", "CP", "FP-C", "FP-S", "LR", "RR")


def _reported() -> list[dict]:
    """Typed from the paper's text (Table 7, App. D; Table 4, Sec. 5)."""
    t7 = {
        "BERT-base": {"Baseline": [54.2, 83.4, 90.5, 90.1, 60.3, 91.6, 87.1],
                      "NE": [54.5, 82.9, 89.5, 89.6, 60.3, 89.6, 86.9],
                      "Unauthorized": [33.4, 31.8, 50.5, 36.8, 47.3, 50.9, 60.2]},
        "RoBERTa-base": {"Baseline": [53.8, 87.7, 92.8, 90.9, 66.1, 94.5, 87.5],
                         "NE": [55.5, 87.5, 92.4, 90.8, 65.3, 94.6, 87.2],
                         "Unauthorized": [37.1, 35.4, 49.5, 63.2, 52.7, 49.1, 63.5]},
    }
    t4 = {
        "InternVL3-1B": {"Baseline": [72.7, 77.4, 82.4, 58.7, 79.4, 50.3, 66.8],
                         "NE": [72.6, 77.8, 82.0, 58.3, 78.9, 50.9, 67.3]},
        "Qwen2.5-VL-3B": {"Baseline": [78.8, 81.3, 83.1, 69.2, 84.9, 66.5, 75.4],
                          "NE": [18.3, 29.2, 15.6, 17.0, 12.8, 17.3, 22.3]},
    }
    out = []
    for table, data, columns in ((7, t7, ("CoLA", "MNLI", "QNLI", "QQP", "RTE", "SST2", "STSB")), (4, t4, MMB_GROUPS)):
        for model, rows in data.items():
            for row, values in rows.items():
                out += [{"kind": "reported", "paper": PAPER, "table": table, "model": model, "row": row, "column": c,
                         "value": v, "cite": f"{CITATION}, Table {table}, block {model!r}, row {row!r}, column {c!r}"}
                        for c, v in zip(columns, values)]
    return out


REPORTED = _reported()


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**{k: r[k] for k in ("task", "defense", "release", "authorized", "evaluated", "role")},
                          "params": str(sorted((r.get("params") or {}).items())), "metrics": r.get("metrics") or {}}
                         for r in rows])


def _reported_block(table: int, model: str | None, columns: list[str]) -> pd.DataFrame | None:
    """The paper's rows of block `model` (a paper model name) of Table `table`, as printed there."""
    entries = [e for e in REPORTED if e["table"] == table and e["model"] == model and e["column"] in columns]
    if not entries:
        return None
    frame = pd.DataFrame(entries).pivot(index="row", columns="column", values="value")
    return frame.reindex(index=list(dict.fromkeys(e["row"] for e in entries)), columns=columns)


def reported_tables(table: int, rows: list[dict], paper_models: dict[str, str] | None) -> list[tuple[str, pd.DataFrame]]:
    """[(paper model, frame)]: the paper's own blocks of Table `table` for the paper models that the suite's
    `[report] paper_models` maps its evaluated models to, in their own table (never mixed into a measured one)."""
    paper_models = paper_models or {}
    columns = list(MMB_GROUPS) if table == 4 else [GLUE_COLUMNS[t] for t in GLUE_COLUMNS
                                                   if t in {r.get("task") for r in rows}]
    out = []
    for m in dict.fromkeys(r["evaluated"] for r in rows):
        name = paper_models.get(m)
        block = _reported_block(table, name, columns) if name else None
        if block is not None and name not in [n for n, _ in out]:
            out.append((name, block))
    return out


def table7(rows: list[dict], paper_models: dict[str, str] | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """[(params, evaluated model, frame)]: rows Baseline / NE / Unauthorized (per source) / control; columns tasks."""
    frame = _frame(rows)  # the glue protocol's rows
    paper_models = paper_models or {}
    if frame.empty:
        return []
    tasks = [t for t in GLUE_COLUMNS if t in set(frame["task"])]
    columns = [GLUE_COLUMNS[t] for t in tasks]
    out = []
    protected = frame[frame["defense"] != "none"]
    for params in dict.fromkeys(protected["params"]):
        part = protected[protected["params"] == params]
        for m in dict.fromkeys(frame["evaluated"]):
            def cell(sel):
                vals = {t: sel[sel["task"] == t]["metrics"].map(lambda x: x.get("top1")).mean() for t in tasks}
                return [vals[t] for t in tasks]

            body = {"Baseline": cell(frame[(frame["defense"] == "none") & (frame["evaluated"] == m)])}
            mine = part[part["evaluated"] == m]
            body["NE (authorized)"] = cell(mine[(mine["authorized"] == m) & (mine["release"] == "embedding")])
            for a in dict.fromkeys(mine["authorized"]):
                if a != m:
                    body[f"Unauthorized (release for {a})"] = cell(mine[(mine["authorized"] == a) & (mine["release"] == "embedding")])
                    body[f"delta = 0 control (embedding of {a})"] = cell(
                        mine[(mine["authorized"] == a) & (mine["release"] == "embedding-clean")])
            out.append((params, m, pd.DataFrame(body, index=columns).T))
    return out


def table4(rows: list[dict], paper_models: dict[str, str] | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """[(params, authorized model, frame)]: for each evaluated model a block of rows Baseline / NE; columns groups."""
    frame = _frame(rows)  # the mmbench protocol's rows
    paper_models = paper_models or {}
    if frame.empty:
        return []

    def values(sel):
        return [100.0 * sel["metrics"].map(lambda x: x.get(g, float("nan"))).mean() for g in MMB_GROUPS]

    out = []
    protected = frame[frame["defense"] != "none"]
    for params in dict.fromkeys(protected["params"]):
        part = protected[protected["params"] == params]
        for a in dict.fromkeys(part["authorized"]):
            blocks = []
            for m in dict.fromkeys(frame["evaluated"]):
                roles = part[(part["authorized"] == a) & (part["evaluated"] == m)]["role"]
                role = roles.iloc[0] if len(roles) else ("authorized" if m == a else "unauthorized")
                body = {f"{m} ({role}) Baseline": values(frame[(frame["defense"] == "none") & (frame["evaluated"] == m)]),
                        f"{m} ({role}) NE": values(part[(part["authorized"] == a) & (part["evaluated"] == m)])}
                blocks.append(pd.DataFrame(body, index=list(MMB_GROUPS)).T)
            out.append((params, a, pd.concat(blocks)))
    return out


def task_summary(reports: list[Path]) -> list[str]:
    """What `authbench run` prints for the task protocols (GLUE, MMBench): every Markdown report."""
    return [p.read_text() for p in reports if p.suffix == ".md"]


def render_glue_tables(rows: list[dict], out_dir: Path, report: dict | None = None) -> list[Path]:
    """Write table7_glue.{md,csv} of the glue protocol's rows."""
    return _render_task_tables(rows, out_dir, report, table7, 7, (
        "table7_glue", "Table 7 (NE shape): GLUE, primary metric x 100 (CoLA Matthews, STS-B Pearson, else accuracy)",
        "Block = evaluated model. Unauthorized = it reads another model's release; the control row feeds that "
        "model's unperturbed embedding output."))


def render_mmbench_tables(rows: list[dict], out_dir: Path, report: dict | None = None) -> list[Path]:
    """Write table4_mmbench.{md,csv} of the mmbench protocol's rows."""
    return _render_task_tables(rows, out_dir, report, table4, 4, (
        "table4_mmbench", "Table 4 (NE shape): MMBench circular accuracy (%) via VLMEvalKit, exact matching",
        "One table per authorized model; NE rows read that model's released images."))


def _render_task_tables(rows: list[dict], out_dir: Path, report: dict | None, build, table: int,
                        text: tuple) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paper_models = (report or {}).get("paper_models", {})
    measured = measured_line(provenance_of(rows))
    paths = []
    for name, title, note, parts in ((*text, build(rows, paper_models)),):
        if not parts:
            continue
        reported = reported_tables(table, rows, paper_models)
        head = measured.replace("no figure here is reported by a paper.",
                                "the section \"Reported by the paper\" quotes the paper's own table, with citation; "
                                "nothing there is measured.") if reported else measured
        md = [f"{head}\n\n# {title}\n\n{note}"]
        csv = []
        for params, model, frame in parts:
            md.append(f"## {model}, params {params}\n\n{to_markdown(frame)}")
            csv.append(frame.reset_index().rename(columns={"index": "row"}).assign(model=model, params=params))
        (out_dir / f"{name}.md").write_text("\n\n".join(md + _reported_section(table, reported, name)) + "\n")
        paths += [out_dir / f"{name}.md",
                  *write_csv(pd.concat(csv, ignore_index=True), out_dir / f"{name}.csv", provenance_of(rows), measured)]
        if reported:
            long = pd.DataFrame([e for e in REPORTED if e["table"] == table and e["model"] in dict(reported)
                                 and e["column"] in set().union(*(set(f.columns) for _, f in reported))])
            long = long[["kind", "table", "model", "row", "column", "value", "cite"]].rename(columns={"model": "block"})
            paths += write_csv(long, out_dir / f"{name}_reported.csv", {"reported": CITATION},
                               f"Reported by the paper ({CITATION}, Table {table}); not measured here.")
    return paths


def _reported_section(table: int, reported: list[tuple[str, pd.DataFrame]], name: str) -> list[str]:
    """The paper's own blocks of Table `table`, under their own heading and citation (empty when none maps)."""
    if not reported:
        return []
    out = [f"## Reported by the paper (not measured here)\n\nQuoted from {CITATION}, Table {table} (block, row and "
           f"column as labelled); also in `{name}_reported.csv`."]
    out += [f"### {model} (Table {table}, reported)\n\n{to_markdown(frame)}" for model, frame in reported]
    return out
