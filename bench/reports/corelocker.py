"""CoreLocker paper-shaped reports (Tables 1, 2, 3, 5, 6, 7 and Figures 6, 7) from result rows.

Measured numbers come from authbench result rows; the paper's own numbers (`REPORTED`, Tables
1-3 and 5-7 and the Figure 7 claim of Sec. 5.2.2, each with its table, row and column) are
rendered in a separate, labelled section at the paper's precision, never in the measured cells.
Cells are mean ± std over trials (std over trials, ddof 0; no ± for one trial).

Comparison with delta: the suite's `[report] corelocker_compare = {<model label> = "<paper
model>"}` says which measured model stands for which of the paper's models (ResNet-164,
DenseNet-40, Vgg-19, ViT, CNN-LSTM, BERT), and `corelocker_setting` labels the measured setting
(e.g. "digits zoo, not the paper's setting" or "paper setting: CIFAR-100, trained checkpoints");
a comparison table (measured, reported, delta = measured - reported) is written for Tables 5, 6
and 7 for each mapped model, under that label.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.core.errors import UserError  # noqa: E402
from bench.reports.figures import SIDE_LEGEND_BELOW, chance_level, outside_legend, wrapped  # noqa: E402
from bench.reports.papers import CORELOCKER_AUTHORS  # noqa: E402
from bench.reports.corelocker_fig5 import CITATION, render_fig5  # noqa: E402,F401  (Figure 5: fcn-d<depth>-w<width> models only)
from bench.reports.tables import MISSING, provenance_of, write_csv  # noqa: E402

PAPER = f"CoreLocker ({CORELOCKER_AUTHORS}, IEEE S&P 2024)"
SCORED = "bn-scale"  # the criterion of the paper's Tables 2, 3, 5 and Figure 6
MAIN_RATIO = 0.05
TABLE5_RATIOS = [round(0.0005 * (i + 1), 4) for i in range(20)]  # the paper's grid, 0.0005..0.01
TABLE7_RATIOS = [0.0, 0.005, 0.01, 0.015, 0.02]
PAPER_MODELS = ("ResNet-164", "DenseNet-40", "Vgg-19", "ViT", "CNN-LSTM", "BERT")


def _reported() -> list[dict]:
    """The paper's Tables 1-3 and 5, typed from its text; every entry names its table, row and column."""
    out = []
    t1 = {  # Table 1: top-1 (%) at extraction ratio 0.05
        "Original": [94.62, 94.88, 93.50, 94.04, 94.71, 93.52, 74.53, 76.02, 72.60],
        "Random avg": [91.17, 88.24, 82.30, 87.41, 85.23, 88.31, 57.52, 62.79, 61.13],
        "CoreLocker (l1-norm)": [10.01, 10.00, 9.72, 10.00, 10.01, 10.11, 1.04, 1.01, 1.02],
        "CoreLocker (scale factors)": [10.00, 10.01, 10.00, 10.03, 10.00, 10.00, 1.00, 1.02, 1.00],
    }
    columns = [f"{d} / {m}" for d in ("Fashion-MNIST", "CIFAR-10", "CIFAR-100")
               for m in ("Dense-40", "ResNet-164", "Vgg-19")]
    for row, values in t1.items():
        out += [{"table": 1, "row": row, "column": c, "value": v, "std": None} for c, v in zip(columns, values)]
    t2 = {"DenseNet-40": [(17.23, 4.26), (23.90, 6.09)], "ResNet-164": [(15.98, 8.47), (25.09, 4.11)],
          "Vgg-19": [(15.08, 9.21), (29.52, 9.05)]}  # Table 2: accuracy recovered, CIFAR-10
    t3 = {"DenseNet-40": [(0.00, 0.34), (1.04, 0.81)], "ResNet-164": [(0.00, 0.20), (0.52, 0.82)],
          "Vgg-19": [(0.00, 0.07), (0.00, 0.42)]}  # Table 3: accuracy recovered, Fashion-MNIST
    for table, data, dataset, cols in ((2, t2, "CIFAR-10", ("fine-tuning data 5%", "fine-tuning data 10%")),
                                       (3, t3, "Fashion-MNIST", ("pruning ratio 20%", "pruning ratio 40%"))):
        for model, cells in data.items():
            out += [{"table": table, "row": f"{dataset} / {model}", "column": f"▲ {c}", "value": m, "std": s}
                    for c, (m, s) in zip(cols, cells)]
    t5 = {  # Table 5 (Appendix B.1): utility (%) vs extraction ratio, CIFAR-100, scale factors
        "ResNet-164": [73.3, 71.6, 69.3, 66.6, 63.1, 61.3, 59.7, 56.3, 53.2, 51.9,
                       45.9, 43.9, 41.0, 35.7, 32.0, 32.2, 28.7, 27.9, 26.7, 24.4],
        "DenseNet-40": [70.2, 66.3, 63.5, 60.0, 55.9, 53.7, 51.5, 47.4, 43.6, 43.1,
                        39.3, 36.7, 34.1, 29.3, 27.2, 25.2, 25.0, 20.8, 19.5, 19.5],
    }
    ranges5 = {  # Table 5, "Range (%)" columns
        "ResNet-164": ["70–75", "70–75", "65–70", "65–70", "60–65", "60–65", "55–60", "55–60", "50–55", "50–55",
                       "45–50", "40–45", "40–45", "35–40", "30–35", "30–35", "25–30", "25–30", "25–30", "20–25"],
        "DenseNet-40": ["70–75", "65–70", "60–65", "60–65", "55–60", "50–55", "50–55", "45–50", "40–45", "40–45",
                        "35–40", "35–40", "30–35", "25–30", "25–30", "25–30", "20–25", "20–25", "15–20", "15–20"],
    }
    for model, values in t5.items():
        out += [{"table": 5, "row": f"{r:.4f}", "column": f"CIFAR-100 / {model}", "value": v, "std": None,
                 "range": g, "decimals": 1} for r, v, g in zip(TABLE5_RATIOS, values, ranges5[model])]
    t6 = {"BERT": ("Transformer", "AG News", 4, 87.2, 25.3), "CNN-LSTM": ("CNN, RNN", "CIFAR-10", 10, 81.1, 10.0),
          "ViT": ("Transformer", "CIFAR-100", 100, 81.4, 1.4)}  # Table 6 (Appendix B.2), ratio 0.05; row "CNNLSTM"
    for model, (arch, data, classes, orig, locked) in t6.items():
        out += [{"table": 6, "row": model, "column": c, "value": v, "std": None, "decimals": 1,
                 "note": f"{arch}, {data}, {classes} classes"} for c, v in (("Original", orig), ("CoreLocker", locked))]
    t7 = [(0.0, 81.4, "-"), (0.005, 74.2, "70–80"), (0.01, 65.0, "60–70"), (0.015, 58.1, "50–60"), (0.02, 41.8, "40–50")]
    out += [{"table": 7, "row": f"{r:.4f}", "column": "CIFAR-100 / ViT", "value": v, "std": None, "range": g,
             "decimals": 1} for r, v, g in t7]  # Table 7 (Appendix B.2): ViT granular control
    out += [{"table": "fig7", "row": "CoreLocker (post-extraction, ratio 0.05)", "column": f"{d} top-3", "value": v,
             "std": None, "decimals": 2, "note": "Sec. 5.2.2 text on Figure 7: all models reach 3/N"}
            for d, v in (("CIFAR-10", 30.00), ("CIFAR-100", 3.00))]
    for e in out:
        e.setdefault("decimals", 2)
    return [{"kind": "reported", "paper": PAPER, "citation": CITATION, **e} for e in out]


REPORTED = _reported()


def corelocker_frame(rows: list[dict]) -> pd.DataFrame:
    """One record per row: model, role, attack, trial, criterion, ratio, top1."""
    records = []
    for r in rows:
        merged = {**(r.get("params") or {}), **(r.get("point") or {})}
        records.append({
            "model": r.get("authorized") or r["evaluated"],
            "defense": r["defense"], "role": r["role"], "attack": r["attack"], "trial": int(r.get("trial") or 0),
            "criterion": _criterion(merged), "ratio": float(merged.get("ratio", np.nan)),
            "top1": _num((r.get("metrics") or {}).get("top1")),
            "top3": _num((r.get("metrics") or {}).get("top3")),
        })
    return pd.DataFrame.from_records(records, columns=["model", "defense", "role", "attack", "trial",
                                                       "criterion", "ratio", "top1", "top3"])


def _criterion(params: dict) -> str:
    """The row's extraction criterion; the random control is "random" only for the paper's random single weights
    (random_unit "weight"), "random-filter" for whole filters (random_unit "filter", and rows written before the
    parameter existed, which drew filters)."""
    crit = params.get("criterion", "")
    return "random-filter" if crit == "random" and params.get("random_unit", "filter") == "filter" else crit


def _num(value) -> float:
    return np.nan if value is None else float(value)


def _stat(values) -> tuple[float, float, int]:
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else (np.nan, np.nan, 0)


def _cell(stat) -> str:
    mean, std, n = stat
    if not n or np.isnan(mean):
        return MISSING
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _locked(f: pd.DataFrame, criterion: str, ratio: float) -> pd.DataFrame:
    return f[(f["defense"] == "corelocker") & (f["role"] == "unauthorized") & (f["criterion"] == criterion)
             & np.isclose(f["ratio"], ratio)]


def _models(f: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(f["model"]))


def _by_criterion(mine: pd.DataFrame, metric: str, ratio: float) -> dict:
    """One model's unattacked rows as {column: stat} of `metric`: the original, then the released model of each
    extraction criterion at `ratio` (Table 1's and Figure 7's columns)."""
    cols = {"Original": _stat(mine[mine["role"] == "clean"][metric])}
    for crit, label in (("random", "Random extraction"), ("random-filter", "Random filters (random_unit = filter)"),
                        ("l1", "CoreLocker l1"), ("bn-scale", "CoreLocker bn-scale")):
        if crit != "random-filter" or (mine["criterion"] == crit).any():  # the labelled option only where it ran
            cols[label] = _stat(_locked(mine, crit, ratio)[metric])
    return cols


def table1(f: pd.DataFrame, ratio: float = MAIN_RATIO) -> dict:
    """{model: {column: (mean, std, n)}}: clean, random, l1, bn-scale (released, no attack), and unlocked."""
    none = f[f["attack"] == "none"]
    out = {}
    for model in _models(none):
        mine = none[none["model"] == model]
        cols = _by_criterion(mine, "top1", ratio)
        unlocked = mine[(mine["role"] == "authorized") & np.isclose(mine["ratio"], ratio)]
        cols["Unlocked (key holder)"] = _stat(unlocked["top1"])
        out[model] = cols
    return out


def attack_table(f: pd.DataFrame, prefixes: tuple[str, ...], criterion: str = SCORED,
                 ratio: float = MAIN_RATIO) -> dict:
    """{model: {column: stat}}: locked top1, then per attack its top1 and the recovered Δ
    (attacked - locked, per trial)."""
    locked = _locked(f, criterion, ratio)
    attacks = sorted({a for a in locked["attack"] if a.startswith(prefixes)})
    out = {}
    for model in _models(locked):
        mine = locked[locked["model"] == model]
        base = mine[mine["attack"] == "none"]["top1"].mean()
        cols = {"Locked": _stat(mine[mine["attack"] == "none"]["top1"])}
        for attack in attacks:
            after = mine[mine["attack"] == attack]["top1"]
            cols[f"after {attack}"] = _stat(after)
            cols[f"▲ {attack}"] = _stat(after - base)
        if attacks:
            out[model] = cols
    return out


def table5(f: pd.DataFrame) -> dict:
    """{ratio: {column: stat}}: per model, each CoreLocker criterion and random extraction."""
    none = f[(f["attack"] == "none") & (f["defense"] == "corelocker") & (f["role"] == "unauthorized")]
    out = {}
    for ratio in sorted(none["ratio"].dropna().unique()):
        at = none[np.isclose(none["ratio"], ratio)]
        out[float(ratio)] = {f"{m} {c}": _stat(at[(at["model"] == m) & (at["criterion"] == c)]["top1"])
                             for m in _models(none) for c in sorted(set(none["criterion"]))}
    return out


def _markdown(table: dict, index: str) -> str:
    columns = list(dict.fromkeys(c for cols in table.values() for c in cols))
    frame = pd.DataFrame([[_cell(cols.get(c, (np.nan, np.nan, 0))) for c in columns] for cols in table.values()],
                         index=[f"{k:g}" if isinstance(k, float) else k for k in table], columns=columns)
    frame.index.name = index
    return frame.to_markdown(colalign=["left"] + ["right"] * len(columns), disable_numparse=True)


def _long(table: dict, index: str) -> pd.DataFrame:
    """The table in long form for CSV: one line per (row, column) with mean, std and trials."""
    return pd.DataFrame([{index: k, "column": c, "mean": s[0], "std": s[1], "trials": s[2]}
                         for k, cols in table.items() for c, s in cols.items()])


def _value(e: dict) -> str:
    d = e["decimals"]
    return f"{e['value']:.{d}f}" + (f" ± {e['std']:.{d}f}" if e["std"] is not None else "")


def _table_name(table) -> str:
    return "Figure 7 (Sec. 5.2.2 text)" if table == "fig7" else f"Table {table}"


def _reported_md(table) -> str:
    """The paper's figures for `table`, at the paper's precision, with its Range columns where it has them."""
    entries = [e for e in REPORTED if e["table"] == table]
    records = []
    for e in entries:
        records.append({"row": e["row"], "column": e["column"], "v": _value(e)})
        if "range" in e:
            records.append({"row": e["row"], "column": f"{e['column']} Range (%)", "v": e["range"]})
    frame = pd.DataFrame(records)
    pivot = frame.pivot(index="row", columns="column", values="v")
    pivot = pivot.reindex(index=list(dict.fromkeys(frame["row"])), columns=list(dict.fromkeys(frame["column"])))
    name = _table_name(table)
    return (f"### Reported by the paper ({PAPER}), {name}\n\n"
            f"Quoted from the paper (kind `reported`; cite: {CITATION}, {name}, the row and column shown); "
            "not measured here.\n\n" + pivot.to_markdown(disable_numparse=True))


def range_bin(value: float, width: float = 5.0) -> str:
    """The paper's Range column for a utility: the `width`-% bin it falls in ("70–75")."""
    if value is None or np.isnan(value):
        return MISSING
    lo = width * np.floor(value / width)
    return f"{lo:g}–{lo + width:g}"


def compare(f: pd.DataFrame, table, mapping: dict, setting: str, ratio: float = MAIN_RATIO) -> str:
    """Measured beside reported with delta for Tables 5, 6, 7 and Figure 7, one block per mapped model."""
    blocks = []
    for label, paper_model in mapping.items():
        mine = f[f["model"] == label]
        entries = [e for e in REPORTED if e["table"] == table and paper_model in (e["column"], e["row"])
                   or e["table"] == table and e["column"].endswith(f"/ {paper_model}")]
        if mine.empty or not entries:
            continue
        records = []
        for e in entries:
            if table == 6:
                stat = _stat(mine[(mine["role"] == "clean") & (mine["attack"] == "none")]["top1"]) \
                    if e["column"] == "Original" else _stat(_locked_any(mine, MAIN_RATIO)["top1"])
            else:
                stat = _stat(_locked_any(mine, float(e["row"]))["top1"])
            d = e["decimals"]
            rec = {"paper row": e["row"], "paper column": e["column"],
                   "measured": MISSING if not stat[2] else f"{stat[0]:.{d}f}",
                   "reported": _value(e),
                   "delta": MISSING if not stat[2] else f"{stat[0] - e['value']:+.{d}f}"}
            if "range" in e:
                rec = {**rec, "measured Range (%)": range_bin(stat[0]) if stat[2] else MISSING,
                       "reported Range (%)": e["range"]}
            records.append(rec)
        blocks.append(f"#### `{label}` (measured) vs the paper's {paper_model}\n\n"
                      + pd.DataFrame(records).to_markdown(index=False, disable_numparse=True))
    if not blocks:
        return ""
    return (f"### Measured vs reported, with delta (measured - reported)\n\nSetting of the measured numbers: "
            f"**{setting or 'not stated by the suite'}**. Reported: {CITATION}, {_table_name(table)}.\n\n"
            + "\n\n".join(blocks))


def _locked_any(f: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """The released model at `ratio` under the non-random criterion measured (bn-scale first, then l1)."""
    for criterion in (SCORED, "l1"):
        at = _locked(f[f["attack"] == "none"], criterion, ratio)
        if not at.empty:
            return at
    return f.iloc[:0]


def granular(f: pd.DataFrame, ratios: list[float] | None = None) -> dict:
    """{ratio: {column: stat}} of the released model per model and non-random criterion (Tables 5, 7)."""
    none = f[(f["attack"] == "none") & (f["defense"] == "corelocker") & (f["role"] == "unauthorized")
             & ~f["criterion"].str.startswith("random")]
    grid = ratios if ratios is not None else sorted(none["ratio"].dropna().unique())
    out = {}
    for ratio in grid:
        at = none[np.isclose(none["ratio"], ratio)]
        if at.empty:
            continue
        out[float(ratio)] = {}
        for m in _models(none):
            for c in sorted(set(none["criterion"])):
                stat = _stat(at[(at["model"] == m) & (at["criterion"] == c)]["top1"])
                if stat[2]:
                    out[float(ratio)][f"{m} {c}"] = stat
    return out


def figure7(f: pd.DataFrame, ratio: float = MAIN_RATIO) -> dict:
    """{model: {column: stat}} of top-3 accuracy: original, random, l1, bn-scale at `ratio`."""
    none = f[f["attack"] == "none"]
    out = {}
    for model in _models(none):
        cols = _by_criterion(none[none["model"] == model], "top3", ratio)
        if any(s[2] for s in cols.values()):
            out[model] = cols
    return out


def _figure7_png(table: dict, path: Path, head: str) -> Path:
    labels = list(next(iter(table.values())))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(table), 3.2))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        means = [table[m][label][0] for m in table]
        ax.bar(np.arange(len(table)) + i * width, means, width, label=label)
    ax.set(xticks=np.arange(len(table)) + 0.4 - width / 2, ylabel="top-3 (%)", ylim=(0, 102))
    ax.set_xticklabels(list(table), rotation=20, fontsize=7)
    ax.legend(fontsize=6)
    fig.suptitle("CoreLocker Figure 7 shape: top-3 accuracy at ratio 0.05\n" + head, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _figure6(f: pd.DataFrame, path: Path, head: str, classes: int | None) -> Path:
    """Small multiples: one panel per model, one line per criterion (random with its ± std band); the
    chance line at 100/`classes` % when the class count is known."""
    none = f[(f["attack"] == "none") & (f["defense"] == "corelocker") & (f["role"] == "unauthorized")]
    models = _models(none)
    ncols = min(5, len(models))
    nrows = -(-len(models) // ncols)
    side = 2.6 if ncols < SIDE_LEGEND_BELOW else 0.0  # room for a legend beside narrow figures
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + side, 2.6 * nrows + 1.2), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    chance = chance_level(classes)
    styles = {SCORED: ("-", "C0"), "l1": ("-.", "C1"), "random": ("--", "C2")}
    for ax, model in zip(axes.flat, models):
        for crit in sorted(set(none["criterion"])):
            stats = none[(none["model"] == model) & (none["criterion"] == crit)].groupby("ratio")["top1"]
            mean, std = stats.mean(), stats.std(ddof=0).fillna(0)
            style, color = styles.get(crit, (":", "C3"))
            ax.plot(mean.index, mean.values, style, color=color, marker="o", ms=3, label=f"CoreLocker {crit}"
                    if not crit.startswith("random") else "random extraction (± std)" if crit == "random"
                    else "random filters (± std)")
            if crit.startswith("random"):
                ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.15)
        if chance is not None:
            ax.axhline(chance, color="0.5", lw=0.8, ls=":", label=f"chance ({chance:.3g}%, {classes} classes)")
        ax.set(xscale="log", title=model, ylim=(0, 102))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("global extraction ratio")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1, released model (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    outside_legend(fig, handles, labels, ncols)
    fig.suptitle("CoreLocker Figure 6 shape: accuracy of the released (locked) model vs extraction ratio\n"
                 + wrapped(head, fig.get_figwidth() - side, 8), fontsize=8)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def table6(f: pd.DataFrame, models: list[str], ratio: float = MAIN_RATIO) -> dict:
    """{model: {Original, CoreLocker}}: clean top-1 and the released model's at `ratio` (Table 6's shape)."""
    out = {}
    for model in models:
        mine = f[f["model"] == model]
        out[model] = {"Original": _stat(mine[(mine["role"] == "clean") & (mine["attack"] == "none")]["top1"]),
                      f"CoreLocker (ratio {ratio:g})": _stat(_locked_any(mine, ratio)["top1"])}
    return out


def render_corelocker(rows: list[dict], out_dir: Path, classes: int | None = None, cfg: dict | None = None) -> list[Path]:
    """Write corelocker_table{1,2,3,5,6,7}.{md,csv}, corelocker_fig7.{md,csv,png} and corelocker_fig6.png
    where the rows support them (`classes`: the chance line of Figure 6). `cfg` is the suite's [report] table (corelocker_compare, corelocker_setting)."""
    cfg = cfg or {}
    mapping = {str(k): str(v) for k, v in (cfg.get("corelocker_compare") or {}).items()}
    bad = sorted(set(mapping.values()) - set(PAPER_MODELS))
    if bad:
        raise UserError(f"[report] corelocker_compare names {bad[0]!r}, not one of the paper's models; valid choices: "
                        f"{', '.join(PAPER_MODELS)}")
    setting = str(cfg.get("corelocker_setting", ""))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance_of(rows)
    head = (f"Measured by authbench (suite `{prov['suite']}`, suite digest `{prov['suite_digest']}`, "
            f"git `{prov['git']}`); top-1 accuracy (%), mean ± std over trials."
            + (f" Setting: {setting}." if setting else ""))
    f = corelocker_frame(rows)
    attacked = f[(f["defense"] == "corelocker") & (f["attack"] != "none")]["ratio"].dropna()
    ratio = MAIN_RATIO if attacked.empty or np.isclose(attacked, MAIN_RATIO).any() else float(attacked.iloc[0])
    table6_models = [m for m, p in mapping.items() if p in ("BERT", "CNN-LSTM", "ViT")]
    vit = {m: p for m, p in mapping.items() if p == "ViT"}
    specs = [
        (1, f"Table 1 (CoreLocker shape): top-1 at extraction ratio {MAIN_RATIO:g}, released model without key",
         table1(f), "model", {}),
        (2, f"Table 2 (CoreLocker shape): fine-tuning (and distillation, not in the paper) of the {SCORED}-locked "
            f"model (ratio {ratio:g}); ▲ = recovered accuracy", attack_table(f, ("finetune", "distill"), ratio=ratio),
         "model", {}),
        (3, f"Table 3 (CoreLocker shape): pruning of the {SCORED}-locked model (ratio {ratio:g}): global magnitude "
            "pruning (`prune`) and Fine-Pruning (`fine-prune`, the attack the paper follows); ▲ = recovered accuracy",
         attack_table(f, ("prune", "fine-prune"), ratio=ratio), "model", {}),
        (5, "Table 5 (CoreLocker shape): granular control, top-1 at each global extraction ratio", table5(f), "ratio",
         {m: p for m, p in mapping.items() if p in ("ResNet-164", "DenseNet-40")}),
        (6, f"Table 6 (CoreLocker shape): other architectures, top-1 before and after extraction at ratio {MAIN_RATIO:g}",
         table6(f, table6_models), "model", {m: mapping[m] for m in table6_models}),
        (7, "Table 7 (CoreLocker shape): ViT granular control, top-1 of the released model at each ratio",
         granular(f[f["model"].isin(list(vit))], TABLE7_RATIOS) if vit else {}, "ratio", vit),
        ("fig7", f"Figure 7 (CoreLocker shape): top-3 accuracy (%) at extraction ratio {MAIN_RATIO:g}", figure7(f),
         "model", {}),
    ]
    paths = []
    for number, title, table, index, compared in specs:
        if not table or all(np.isnan(s[0]) for cols in table.values() for s in cols.values()):
            continue
        stem = "corelocker_fig7" if number == "fig7" else f"corelocker_table{number}"
        md, csv = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
        parts = [head.replace("top-1 accuracy", "top-3 accuracy") if number == "fig7" else head, f"# {title}",
                 "## Measured by authbench", _markdown(table, index)]
        if any(e["table"] == number for e in REPORTED):
            parts.append(_reported_md(number))
        if compared:
            block = compare(f, number, compared, setting)
            if block:
                parts.append(block)
        md.write_text("\n\n".join(parts) + "\n")
        paths += [md, *write_csv(_long(table, index), csv, prov, head)]
        if number == "fig7":
            paths.append(_figure7_png(table, out_dir / "corelocker_fig7.png", head))
    if len(set(f.loc[f["defense"] == "corelocker", "ratio"].dropna())) > 1:
        paths.append(_figure6(f, out_dir / "corelocker_fig6.png", head, classes))
    return paths + render_fig5(rows, out_dir, setting)
