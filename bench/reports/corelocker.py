"""CoreLocker paper-shaped reports (Tables 1, 2, 3, 5 and Figure 6) from result rows.

Measured numbers come from authbench result rows; the paper's own numbers (`REPORTED`, Tables
1-3 and 5, each with its citation) are rendered in a separate, labelled section, never in the
measured cells. Cells are mean ± std over trials (std over trials, ddof 0; no ± for one trial).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.reports.figures import SIDE_LEGEND_BELOW, chance_level, outside_legend, wrapped  # noqa: E402
from bench.reports.tables import MISSING, provenance_of, write_csv  # noqa: E402

PAPER = "CoreLocker (Wang et al., IEEE S&P 2024)"
SCORED = "bn-scale"  # the criterion of the paper's Tables 2, 3, 5 and Figure 6
MAIN_RATIO = 0.05


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
    ratios = [round(0.0005 * (i + 1), 4) for i in range(20)]
    for model, values in t5.items():
        out += [{"table": 5, "row": f"{r:.4f}", "column": f"CIFAR-100 / {model}", "value": v, "std": None}
                for r, v in zip(ratios, values)]
    return [{"kind": "reported", "paper": PAPER, **e} for e in out]


REPORTED = _reported()


def corelocker_frame(rows: list[dict]) -> pd.DataFrame:
    """One record per row: model, role, attack, trial, criterion, ratio, top1."""
    records = []
    for r in rows:
        merged = {**(r.get("params") or {}), **(r.get("point") or {})}
        records.append({
            "model": r.get("authorized") or r["evaluated"],
            "defense": r["defense"], "role": r["role"], "attack": r["attack"], "trial": int(r.get("trial") or 0),
            "criterion": merged.get("criterion", ""), "ratio": float(merged.get("ratio", np.nan)),
            "top1": float((r.get("metrics") or {}).get("top1", np.nan)),
        })
    return pd.DataFrame.from_records(records, columns=["model", "defense", "role", "attack", "trial",
                                                       "criterion", "ratio", "top1"])


def _stat(values) -> tuple[float, float, int]:
    v = np.asarray(list(values), dtype=float)
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


def table1(f: pd.DataFrame, ratio: float = MAIN_RATIO) -> dict:
    """{model: {column: (mean, std, n)}}: clean, random, l1, bn-scale (released, no attack), and unlocked."""
    none = f[f["attack"] == "none"]
    out = {}
    for model in _models(none):
        mine = none[none["model"] == model]
        cols = {"Original": _stat(mine[mine["role"] == "clean"]["top1"])}
        for crit, label in (("random", "Random extraction"), ("l1", "CoreLocker l1"), ("bn-scale", "CoreLocker bn-scale")):
            cols[label] = _stat(_locked(mine, crit, ratio)["top1"])
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


def _reported_md(table: int) -> str:
    entries = [e for e in REPORTED if e["table"] == table]
    frame = pd.DataFrame([{"row": e["row"], "column": e["column"],
                           "v": f"{e['value']:.2f}" + (f" ± {e['std']:.2f}" if e["std"] is not None else "")}
                          for e in entries])
    pivot = frame.pivot(index="row", columns="column", values="v")
    pivot = pivot.reindex(index=list(dict.fromkeys(frame["row"])), columns=list(dict.fromkeys(frame["column"])))
    return (f"### Reported by the paper ({PAPER}), Table {table}\n\n"
            f"Quoted from the paper (kind `reported`; cite: {PAPER}, Table {table}, row, column); not measured here.\n\n"
            + pivot.to_markdown(disable_numparse=True))


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
                    if crit != "random" else "random extraction (± std)")
            if crit == "random":
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


def render_corelocker(rows: list[dict], out_dir: Path, classes: int | None = None) -> list[Path]:
    """Write corelocker_table{1,2,3,5}.{md,csv} and corelocker_fig6.png where the rows support them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance_of(rows)
    head = (f"Measured by authbench (suite `{prov['suite']}`, suite digest `{prov['suite_digest']}`, "
            f"git `{prov['git']}`); top-1 accuracy (%), mean ± std over trials.")
    f = corelocker_frame(rows)
    attacked = f[(f["defense"] == "corelocker") & (f["attack"] != "none")]["ratio"].dropna()
    ratio = MAIN_RATIO if attacked.empty or np.isclose(attacked, MAIN_RATIO).any() else float(attacked.iloc[0])
    specs = [
        (1, f"Table 1 (CoreLocker shape): top-1 at extraction ratio {MAIN_RATIO:g}, released model without key",
         table1(f), "model"),
        (2, f"Table 2 (CoreLocker shape): fine-tuning (and distillation, not in the paper) of the {SCORED}-locked "
            f"model (ratio {ratio:g}); ▲ = recovered accuracy", attack_table(f, ("finetune", "distill"), ratio=ratio),
         "model"),
        (3, f"Table 3 (CoreLocker shape): magnitude pruning of the {SCORED}-locked model (ratio {ratio:g}); "
            "▲ = recovered accuracy", attack_table(f, ("prune",), ratio=ratio), "model"),
        (5, "Table 5 (CoreLocker shape): granular control, top-1 at each global extraction ratio", table5(f), "ratio"),
    ]
    paths = []
    for number, title, table, index in specs:
        if not table or all(np.isnan(s[0]) for cols in table.values() for s in cols.values()):
            continue
        md = out_dir / f"corelocker_table{number}.md"
        parts = [head, f"# {title}", "## Measured by authbench", _markdown(table, index)]
        if any(e["table"] == number for e in REPORTED):
            parts.append(_reported_md(number))
        md.write_text("\n\n".join(parts) + "\n")
        paths += [md, *write_csv(_long(table, index), out_dir / f"corelocker_table{number}.csv", prov, head)]
    if len(set(f.loc[f["defense"] == "corelocker", "ratio"].dropna())) > 1:
        paths.append(_figure6(f, out_dir / "corelocker_fig6.png", head, classes))
    return paths
