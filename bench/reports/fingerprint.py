"""Ownership-verification reports: MFUE Tables 1-2 shape, leaderboard, ROC, score, strength figures, attacks.

Everything is computed from verify-protocol result rows, except the `reported` columns of
Tables 1 and 2, which are the MFUE paper's figures, cited in full and printed at its precision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sklearn.metrics import auc as area  # noqa: E402

from bench.fingerprint.detectors import DETECTORS  # noqa: E402
from bench.fingerprint.metrics import roc  # noqa: E402
from bench.fingerprint.suspects import parse_chain, parse_number  # noqa: E402
from bench.core.metrics import FINGERPRINT_METRICS  # noqa: E402
from bench.reports.leaderboard import trains_at_run_time  # noqa: E402
from bench.reports.tables import row_name  # noqa: E402
from bench.reports.tables import (  # noqa: E402
    compact_params, measured_line, provenance_of, registered_defaults, to_markdown)
from bench.reports.mfue_figures import render_mfue_figures  # noqa: E402

PAPER = ("Xu, Wang, Liu, Chen, Abdelmoniem & Wang, \"Breaking the Boundary Barrier: Robust Model Fingerprinting "
         "via Unlearnable Examples in Model-Parameter Space\", KDD '26, doi 10.1145/3770854.3780310")
CITATION = (f"{PAPER}, Table 1 (\"AUC values of different fingerprinting methods across three datasets\"): the row of "
            "each method, columns CIFAR-10 / CIFAR-100 / ImageNet")
REPORTED_AUC = {  # reported by the paper (Table 1), never measured here: (CIFAR-10, CIFAR-100, ImageNet)
    "ipguard": (0.63, 0.66, 0.57), "cae": (0.58, 0.63, 0.54), "metafinger": (0.81, 0.84, 0.72),
    "adv-tra": (0.94, 0.97, 0.85), "mfue-w": (1.00, 1.00, 0.95), "mfue-b": (1.00, 1.00, 0.88),
}
REPORTED_DATASETS = ("CIFAR-10", "CIFAR-100", "ImageNet")
REPORTED_DECIMALS = 2  # the paper prints Tables 1 and 2 with two decimals
CITATION_T2 = (f"{PAPER}, Table 2 (\"Detection accuracy for different fingerprinting queries on CIFAR-100\"): rows "
               "SHE / SCADN / DAEIT, the column of each method")
REPORTED_DETECTION = {  # reported by the paper (Table 2, CIFAR-100), never measured here
    "she": {"ipguard": 0.77, "cae": 0.69, "metafinger": 0.80, "adv-tra": 0.75, "mfue-w": 0.13, "mfue-b": 0.42},
    "scadn": {"ipguard": 0.53, "cae": 0.49, "metafinger": 0.46, "adv-tra": 0.61, "mfue-w": 0.25, "mfue-b": 0.30},
    "daeit": {"ipguard": 0.93, "cae": 0.97, "metafinger": 0.96, "adv-tra": 0.98, "mfue-w": 0.00, "mfue-b": 0.23},
}
SUITE_DATASET = {"fingerprint-cifar10": "CIFAR-10", "fingerprint-cifar100": "CIFAR-100",
                 "fingerprint-imagenet": "ImageNet"}  # suites that run a column's setup
SORT = ["auc", "tpr@1%fpr"]


def _name(row: dict) -> str:
    """The defense as rows name it: MFUE's public-code options and ablations carry their own label."""
    return row_name(row["defense"], row.get("params") or {}, row.get("point") or {})


def _method(row: dict) -> str:

    params = compact_params(row.get("params") or {}, row.get("point") or {}, registered_defaults(row["defense"]))
    return _name(row) if params == "defaults" else f"{_name(row)} ({params})"


def _label(row: dict) -> str:
    """Short name for figures: the method and its swept parameters (the leaderboard lists them all)."""
    point = row.get("point") or {}
    return _name(row) + (" (" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in sorted(point.items())) + ")" if point else "")


def summaries(rows: list[dict]) -> pd.DataFrame:
    """One row per (suite, method, attack) from the jobs' summary rows (mean over trials)."""
    records = []
    for r in rows:
        if r["role"] != "summary":
            continue
        m = r["metrics"]
        records.append({"suite": r["suite"], "method": _method(r), "label": _label(r), "defense": r["defense"],
                        "attack": r["attack"],
                        "source": r["authorized"], "labels_only": (r.get("cost") or {}).get("labels_only"),
                        "auc": m["auc"], "auc_lo": m["auc_ci"][0], "auc_hi": m["auc_ci"][1],
                        "tpr@1%fpr": m["tpr@1%fpr"], "tpr1_lo": m["tpr@1%fpr_ci"][0], "tpr1_hi": m["tpr@1%fpr_ci"][1],
                        "tpr@5%fpr": m["tpr@5%fpr"], "pos_mean": m["score_pos_mean"], "neg_mean": m["score_neg_mean"],
                        "detect": m.get("query_detection_rate"), "n_pos": m["n_positive"], "n_neg": m["n_negative"],
                        "queries": (r.get("cost") or {}).get("queries"),
                        **{f"detect_{n}": m.get(f"detect_{n}", math.nan) for n in DETECTORS}})
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return frame
    keys = ["suite", "method", "label", "defense", "attack", "source", "labels_only"]
    return frame.groupby(keys, sort=False, dropna=False).mean(numeric_only=True).reset_index()


def fingerprint_key(rec: dict, protocol: str) -> str:
    """The `check` key of an ownership-board row: <protocol>|method|attack=..|source=.."""
    return "|".join([protocol, str(rec["method"]), f"attack={rec['attack']}", f"source={rec['source']}"])


def fingerprint_cells(rows: list[dict], protocol: str) -> list[tuple[str, str, float, bool]]:
    """The `check` cells of the ownership board of `protocol`'s rows: (row key, metric, value, trains at run time)."""
    frame = summaries(rows) if rows else pd.DataFrame()
    out = []
    for rec in ([] if frame.empty else frame.to_dict("records")):
        trained = trains_at_run_time(rec["defense"], rec["attack"])
        for metric in FINGERPRINT_METRICS:
            value = rec.get(metric)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                out.append((fingerprint_key(rec, protocol), metric, float(value), trained))
    return out


def _ci(v, lo, hi) -> str:
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def fingerprint_board(rows: list[dict]) -> pd.DataFrame:
    """Methods without a verification attack, ranked by AUC, then TPR@1%FPR."""
    s = summaries(rows)
    if s.empty:
        return s
    s = s[s["attack"] == "none"].sort_values(SORT, ascending=False, kind="stable").reset_index(drop=True)
    s.insert(0, "rank", range(1, len(s) + 1))
    return s


def format_board(board: pd.DataFrame) -> str:
    if board.empty:
        return "(no fingerprint summaries)"
    shown = pd.DataFrame({
        "rank": board["rank"], "method": board["method"], "source": board["source"],
        "labels only": ["yes" if v else "no" for v in board["labels_only"]],
        "AUC [95% CI]": [_ci(*v) for v in board[["auc", "auc_lo", "auc_hi"]].itertuples(index=False)],
        "TPR@1%FPR [95% CI]": [_ci(*v) for v in board[["tpr@1%fpr", "tpr1_lo", "tpr1_hi"]].itertuples(index=False)],
        "TPR@5%FPR": board["tpr@5%fpr"], "score pos": board["pos_mean"], "score neg": board["neg_mean"],
        "query detection": board["detect"], "positives": board["n_pos"], "negatives": board["n_neg"],
        "queries/suspect": board["queries"],
    })
    return to_markdown(shown, {"TPR@5%FPR": 3, "score pos": 3, "score neg": 3, "query detection": 2, "rank": 0,
                               "positives": 0, "negatives": 0, "queries/suspect": 0}, index=False)


def mixed_line(rows: list[dict], citation: str) -> str:
    """First line of a table that puts measured figures beside a paper's: which columns are which."""
    prov = provenance_of(rows)
    return (f"Columns marked (measured) and the deltas are measured by authbench (suite `{prov['suite']}`, suite "
            f"digest `{prov['suite_digest']}`, git `{prov['git']}`). Columns marked (reported) are not measured: "
            f"they are reported by {citation}, printed at the paper's precision.")


def _first_configs(rows: list[dict]) -> pd.DataFrame:
    """Each method's first configuration per suite, no attack on verification."""
    s = summaries(rows)
    return s[s["attack"] == "none"].drop_duplicates(["suite", "defense"]) if not s.empty else s


def table1(rows: list[dict]) -> str:
    """MFUE Table 1 shape: AUC per method; measured columns (this harness, per suite: each method's
    first configuration in the suite, no attack) next to the paper's reported columns and the delta
    against the column of the suite's setup (SUITE_DATASET; CIFAR-10, the paper's main setup, for others)."""
    first = _first_configs(rows)
    measured = first.pivot(index="defense", columns="suite", values="auc") if not first.empty else pd.DataFrame()
    methods = list(dict.fromkeys([*REPORTED_AUC, *measured.index]))
    table = pd.DataFrame(index=methods)
    decimals = {}
    for suite in measured.columns:
        table[f"{suite} (measured)"] = measured[suite].reindex(methods)
        decimals[f"{suite} (measured)"] = 3
    for i, name in enumerate(REPORTED_DATASETS):
        table[f"{name} (reported)"] = [REPORTED_AUC.get(m, (math.nan,) * 3)[i] for m in methods]
        decimals[f"{name} (reported)"] = REPORTED_DECIMALS
    notes = []
    for suite in measured.columns:
        ref = SUITE_DATASET.get(suite, "CIFAR-10")
        column = f"Δ {suite} − {ref}"
        table[column] = table[f"{suite} (measured)"] - table[f"{ref} (reported)"]
        decimals[column] = REPORTED_DECIMALS
        if suite not in SUITE_DATASET:
            notes.append(f"`{column}` compares a {suite} measurement with the paper's {ref} figure: different data.")
    return (f"{mixed_line(rows, CITATION)}\n\n# Fingerprinting AUC (MFUE Table 1 shape)\n\nMeasured: each method's "
            f"first configuration in the suite (the paper's parameters where the suite keeps them), no attack on "
            f"verification; every configuration is in fingerprint_leaderboard.md. {' '.join(notes)}\n\n"
            f"{to_markdown(table, decimals)}\n")


def table2(rows: list[dict]) -> str:
    """MFUE Table 2 shape: share of each method's queries that each deployment-side detector flags
    (threshold: 10% of clean test inputs flagged), measured beside the paper's CIFAR-100 figures."""
    first = _first_configs(rows)
    records = []
    for _, r in first.iterrows():
        for name, cls in DETECTORS.items():
            reported = REPORTED_DETECTION.get(name, {}).get(r["defense"], math.nan)
            measured = r.get(f"detect_{name}", math.nan)
            records.append({"detector": name, "method": r["defense"], f"{r['suite']} (measured)": measured,
                            "CIFAR-100 (reported)": reported, "Δ": measured - reported})
    if not records:
        return f"{mixed_line(rows, CITATION_T2)}\n\n(no fingerprint summaries)\n"
    frame = pd.DataFrame.from_records(records).groupby(["detector", "method"], sort=False).first()
    cols = {c: 3 for c in frame.columns if c.endswith("(measured)")}
    cols.update({"CIFAR-100 (reported)": REPORTED_DECIMALS, "Δ": REPORTED_DECIMALS})
    described = "; ".join(f"`{n}`: {c.citation} ({c.fidelity})" for n, c in DETECTORS.items())
    other = [s for s in first["suite"].unique() if SUITE_DATASET.get(s) != "CIFAR-100"]
    note = (f" Δ for {', '.join(other)} compares its measurement with the paper's CIFAR-100 figure: different data."
            if other else "")
    return (f"{mixed_line(rows, CITATION_T2)}\n\n# Detection of fingerprint queries (MFUE Table 2 shape)\n\n"
            f"Measured: the share of each method's queries (its first configuration, on the source; MFUE-b's include "
            f"its probes) flagged by a detector fitted on the deployer's clean half, thresholded to flag 10% of "
            f"clean test inputs (MFUE Sec. 4.6). `msp` (max softmax) is not in the paper. Detectors: {described}."
            f"{note}\n\n{to_markdown(frame.reset_index(), cols, index=False)}\n")


def strength_points(rows: list[dict]) -> pd.DataFrame:
    """(method, panel, x, score) for every single-step positive with a strength: pruning rate,
    adversarial-training radius (x 255), and the epochs of finetune(MODE,fraction,epochs) /
    advtrain(eps,epochs) (MFUE Figure 6's axes). Each method's first configuration, no attack."""
    chosen: dict = {}  # (suite, defense) -> the job of its first configuration without attack
    for r in rows:
        if r["role"] == "summary" and r["attack"] == "none":
            chosen.setdefault((r["suite"], r["defense"]), r.get("job"))
    records = []
    for r in rows:
        if r["role"] != "positive" or r["attack"] != "none" or chosen.get((r["suite"], r["defense"])) != r.get("job"):
            continue
        chain = r["evaluated"].split("->", 1)[-1]
        steps = parse_chain(chain) if "->" not in chain else []
        if len(steps) != 1:
            continue
        op, args = steps[0]
        if op == "prune":
            panel, x = "pruning rate", parse_number(args[0])
        elif op == "advtrain" and len(args) == 2:
            panel, x = f"advtrain({args[0]}) epochs", int(args[1])
        elif op == "advtrain":
            panel, x = "advtrain radius (x/255)", parse_number(args[0]) * 255
        elif op == "finetune" and len(args) == 3:
            panel, x = f"finetune({args[0]}) epochs", int(args[2])
        else:
            continue
        records.append({"method": r["defense"], "panel": panel, "x": x, "score": r["metrics"]["score"]})
    return pd.DataFrame.from_records(records, columns=["method", "panel", "x", "score"])


def strength_table(rows: list[dict]) -> str:
    points = strength_points(rows)
    if points.empty:
        return f"{measured_line(provenance_of(rows))}\n\n(no positives with a strength parameter)\n"
    wide = points.groupby(["panel", "x", "method"], sort=True)["score"].mean().unstack("method").reset_index()
    return (f"{measured_line(provenance_of(rows))}\n\n# Matching score against attack strength and epochs "
            f"(MFUE Figure 6 shape)\n\nEach method's first configuration, no attack on verification; one positive "
            f"suspect per point.\n\n{to_markdown(wide, {c: 3 for c in wide.columns if c not in ('panel', 'x')} | {'x': 3}, index=False)}\n")


def strength_figure(rows: list[dict], path: Path) -> Path:
    """Figure 6 shape: matching score of each method against pruning rate, adversarial-training
    radius and fine-tuning / adversarial-training epochs."""
    points = strength_points(rows)
    panels = list(dict.fromkeys(points["panel"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        sub = points[points["panel"] == panel]
        for method, d in sub.groupby("method", sort=False):
            d = d.groupby("x")["score"].mean()
            ax.plot(d.index, d.values, marker="o", ms=3, lw=1.4, label=method)
        ax.set_xlabel(panel)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("matching score")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(fig, rows, path, bottom=0.06)


def suspect_table(rows: list[dict]) -> str:
    """MFUE Table 3 (Appendix C) shape: every suspect, its kind, role and clean top-1."""
    seen, lines = set(), []
    for r in rows:
        if r["role"] == "summary" and ("source", r["authorized"]) not in seen and "source_top1" in r["metrics"]:
            seen.add(("source", r["authorized"]))
            lines.append({"source": r["authorized"], "suspect": f"source({r['authorized']})", "kind": "source",
                          "role": "source", "clean top-1 (%)": r["metrics"]["source_top1"]})
        if r["role"] in ("positive", "negative") and (r["authorized"], r["evaluated"]) not in seen:
            seen.add((r["authorized"], r["evaluated"]))
            lines.append({"source": r["authorized"], "suspect": r["evaluated"], "kind": r.get("suspect_kind", ""),
                          "role": r["role"], "clean top-1 (%)": r["metrics"].get("top1")})
    frame = pd.DataFrame.from_records(sorted(lines, key=lambda d: d["role"] != "source"))
    return f"{measured_line(provenance_of(rows))}\n\n# Suspect models\n\n{to_markdown(frame, index=False)}\n"


def _scores(rows: list[dict], attack: str = "none") -> dict:
    """method -> {"positive": [...], "negative": [...], "kinds": [...]} for one attack."""
    out: dict = {}
    for r in rows:
        if r["role"] in ("positive", "negative") and r["attack"] == attack:
            d = out.setdefault(_label(r), {"positive": [], "negative": [], "kinds": []})
            d[r["role"]].append(r["metrics"]["score"])
            if r["role"] == "positive":
                d["kinds"].append(r.get("suspect_kind", ""))
    return out


def _save(fig, rows, path: Path, top: float = 1.0, bottom: float = 0.04) -> Path:
    """Footer with the figure's provenance, then tight layout, PNG, close."""
    prov = provenance_of(rows)
    fig.text(0.01, 0.005, f"measured by authbench, suite {prov['suite']}, git {prov['git'][:12]}", fontsize=7)
    fig.tight_layout(rect=(0, bottom, 1, top))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


LOW_FPR = 0.01  # the operating point the boards report (TPR@1%FPR), marked on the log panel


def roc_figure(rows: list[dict], path: Path) -> Path:
    """Figure 4a shape: ROC curve of every method (no verification attack), on a linear FPR axis and
    beside it on a log FPR axis (the low-FPR region where TPR@1%FPR is read); the legend below both."""
    fig, (lin, log) = plt.subplots(1, 2, figsize=(10.5, 5.2), sharey=True)
    curves = {method: roc(d["positive"], d["negative"])[:2] for method, d in _scores(rows).items()
              if d["positive"] and d["negative"]}
    # the log axis starts at half the smallest nonzero FPR the negatives allow (FPR 0 is drawn there), 1% in view
    floor = min([LOW_FPR / 2] + [0.5 / len(d["negative"]) for d in _scores(rows).values() if d["negative"]])
    for method, (fpr, tpr) in curves.items():
        line, = lin.plot(fpr, tpr, lw=1.6, label=f"{method} (AUC {area(fpr, tpr):.3f})")
        log.plot(np.maximum(fpr, floor), tpr, lw=1.6, color=line.get_color())
    for ax in (lin, log):
        ax.grid(alpha=0.3)
        ax.set_xlabel("false positive rate" + (" (log)" if ax is log else ""))
    grid = np.logspace(np.log10(floor), 0, 50)
    lin.plot([0, 1], [0, 1], ":", color="0.5", lw=0.8, label="chance (TPR = FPR)")
    log.plot(grid, grid, ":", color="0.5", lw=0.8)
    log.set_xscale("log")
    log.set_xlim(floor, 1.0)
    log.axvline(LOW_FPR, color="0.3", lw=0.8, ls="--")
    log.text(LOW_FPR, 0.02, " 1% FPR", fontsize=7, color="0.3")
    lin.set_ylabel("true positive rate")
    lin.set_title("ROC of ownership verification", fontsize=10)
    log.set_title("log FPR: the low-FPR region (FPR 0 drawn at the left edge)", fontsize=9)
    handles, labels = lin.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.025), ncol=min(3, len(labels)),
               fontsize=7, frameon=False)  # below both panels, above the provenance footer
    legend_rows = -(-len(labels) // min(3, max(1, len(labels))))
    return _save(fig, rows, path, bottom=0.07 + 0.035 * legend_rows)


def score_figure(rows: list[dict], path: Path) -> Path:
    """Figure 4b-d shape: matching-score distribution per method, per positive kind and for negatives."""
    scores = _scores(rows)
    kinds = sorted({k for d in scores.values() for k in d["kinds"]})
    groups = [*kinds, "negative"]
    ncols = min(5, max(1, len(scores)))
    nrows = math.ceil(len(scores) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.6 * nrows), squeeze=False, sharey=True)
    for ax in list(axes.flat)[len(scores):]:
        ax.set_visible(False)
    for ax, (method, d) in zip(axes.flat, scores.items()):
        data = [[s for s, k in zip(d["positive"], d["kinds"]) if k == kind] for kind in kinds] + [d["negative"]]
        ax.boxplot([v if v else [np.nan] for v in data], showfliers=False)
        for i, v in enumerate(data, 1):
            jitter = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(len(v))
            ax.scatter(i + jitter, v, s=8, color="tab:red" if groups[i - 1] == "negative" else "tab:blue", alpha=0.7)
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=60, fontsize=7)
        ax.set_title(method, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("matching score")
    return _save(fig, rows, path)


def attack_figure(rows: list[dict], path: Path) -> Path:
    """Figures 9-10 shape: AUC and mean positive score of every method under each verification attack."""
    s = summaries(rows)
    attacks = list(dict.fromkeys(s["attack"]))
    methods = list(dict.fromkeys(s["label"]))
    fig, axes = plt.subplots(2, 1, figsize=(max(9, 1.1 * len(attacks) + 3), 7.5), sharex=True)
    width = 0.8 / max(1, len(methods))
    for ax, column, label in ((axes[0], "auc", "AUC"), (axes[1], "pos_mean", "mean score of positives")):
        for i, method in enumerate(methods):
            sub = s[s["label"] == method].groupby("attack")[column].mean().reindex(attacks)
            ax.bar(np.arange(len(attacks)) + i * width, sub.values, width, label=method)
        ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2, attacks, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Attacks on verification: query processing and DP-Logits", fontsize=10)
    return _save(fig, rows, path, top=0.95)


def render_fingerprint(rows: list[dict], out_dir: Path) -> list[Path]:
    """Write the fingerprint tables, leaderboard and figures; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board = fingerprint_board(rows)
    prov = provenance_of(rows)
    paths = [out / "fingerprint_table1.md", out / "fingerprint_leaderboard.md", out / "fingerprint_leaderboard.json",
             out / "fingerprint_suspects.md", out / "fingerprint_attacks.md", out / "fingerprint_table2.md",
             out / "fingerprint_strength.md"]
    paths[0].write_text(table1(rows))
    paths[5].write_text(table2(rows))
    paths[6].write_text(strength_table(rows))
    paths[1].write_text(f"{measured_line(prov)}\n\n# Fingerprinting leaderboard\n\nRanked by AUC, then TPR@1%FPR "
                        f"(higher is better); 95% bootstrap CIs over suspects.\n\n{format_board(board)}\n")
    records = json.loads(board.to_json(orient="records")) if not board.empty else []
    paths[2].write_text(json.dumps({"kind": "authbench-fingerprint-leaderboard", "version": 1, "provenance": prov,
                                    "rank_by": SORT, "rows": records}, indent=1) + "\n")
    paths[3].write_text(suspect_table(rows))
    s = summaries(rows)
    wide = s.pivot_table(index="label", columns="attack", values="auc", sort=False) if not s.empty else s
    paths[4].write_text(f"{measured_line(prov)}\n\n# AUC under attacks on verification\n\n"
                        f"{to_markdown(wide, {c: 3 for c in wide.columns})}\n")
    if any(r["role"] != "summary" and r["attack"] == "none" for r in rows):
        paths += [roc_figure(rows, out / "fingerprint_roc.png"), score_figure(rows, out / "fingerprint_scores.png")]
    if not strength_points(rows).empty:
        paths.append(strength_figure(rows, out / "fingerprint_strength.png"))
    if len(set(s["attack"])) > 1:
        paths.append(attack_figure(rows, out / "fingerprint_attacks.png"))

    return paths + render_mfue_figures(rows, out)
