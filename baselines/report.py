"""NE Table 3 in the paper's shape, from measured result rows, next to the paper's own values.

A measured row is a dict: `defense` (ne-*, dp, fhe, algospec, none), `params`, `role`
("authorized" | "unauthorized"), `accuracy` (percent, measured), `cost` (the defense's
Protected.cost) and optionally `n` (samples scored). Protection is computed, never set: the
mean unauthorized accuracy is within `margin` points of chance.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

NE = "Non-Transferable Examples (NE) paper, Table 3"
MEFTAH = "Meftah et al., 'DOReN', IEEE TIFS 16:3740-3752, 2021 (ResNet-20, CIFAR-10), as cited in NE Table 3 note 3"

# (dataset, model, method) -> value as printed; every entry cites its cell.
REPORTED = [
    {"dataset": ds, "model": model, "method": method, "value": value, "source": f"{NE}, {ds} / {model} / {method}"}
    for ds, rows in {
        "CIFAR-10": {"ResNet-50": ["98.2%", "59.8%", "87.8%", "6.4%", "97.7%"],
                     "ViT-B": ["98.8%", "- (note 1)", "-", "10.0%", "98.7%"],
                     "Protection": ["x", "x (note 2)", "tick", "x (note 2)", "tick"]},
        "ImageNet": {"ResNet-50": ["80.3%", "63.1%", "-", "0.1%", "80.2%"],
                     "ViT-B": ["81.6%", "- (note 1)", "-", "0.0%", "81.3%"],
                     "Protection": ["x", "x (note 2)", "tick", "x (note 2)", "tick"]},
    }.items()
    for model, values in rows.items()
    for method, value in zip(["Plain", "DP", "FHE", "ALGOSPEC", "NE"], values)
] + [
    {"dataset": "CIFAR-10", "model": "ResNet-20", "method": "FHE", "value": "87.8%", "source": MEFTAH},
]
REPORTED_NOTES = {
    "Protection": "hand-set ticks in the paper, not measured",
    "FHE": "the paper's FHE cell is copied from Meftah et al. (its own run was too slow: >30 min per image)",
    "note 1": "DP struggles with batch norm and does not support multi-head attention in Transformers",
    "note 2": "the authorized model performance is significantly impacted",
}


def column(row: dict) -> str:
    d = row["defense"]
    if d == "dp":
        return f"DP (eps={row['params'].get('epsilon', '?'):g})"
    return {"fhe": "FHE", "algospec": "ALGOSPEC", "none": "Plain"}.get(d, "NE" if d.startswith("ne") else d)


def measured(rows: list[dict], chance: float = 10.0, margin: float = 5.0) -> dict[str, dict]:
    """column -> {row name: value}; every value computed from the rows."""
    by = defaultdict(list)
    for r in rows:
        by[column(r)].append(r)
    out = {}
    for col, rs in by.items():
        auth = [r["metrics"]["top1"] for r in rs if r["role"] == "authorized"]
        unauth = [r["metrics"]["top1"] for r in rs if r["role"] == "unauthorized"]
        cost = next((r.get("cost") or {} for r in rs if r["role"] == "authorized"), {})
        mean_u = float(np.mean(unauth)) if unauth else None
        out[col] = {
            "authorized utility": float(np.mean(auth)) if auth else None,
            "unauthorized utility": mean_u,
            "protection": None if mean_u is None else mean_u <= chance + margin,
            "training needed": cost.get("retraining"),
            "architecture changed": cost.get("architecture_changed"),
            "time per sample (ms)": cost.get("time_per_sample_ms"),
            "artifact size (bytes)": cost.get("artifact_bytes"),
        }
    return out


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) < 1e5 else f"{v:.3g}"
    return str(v)


def render_markdown(rows: list[dict], chance: float = 10.0, margin: float = 5.0) -> str:
    """Measured section (this harness) and reported section (the papers), labelled and separate."""
    table = measured(rows, chance, margin)
    order = [c for c in ["Plain", "NE"] if c in table] + sorted(c for c in table if c.startswith("DP")) + \
        [c for c in ["FHE", "ALGOSPEC"] if c in table] + \
        sorted(c for c in table if c not in {"Plain", "NE", "FHE", "ALGOSPEC"} and not c.startswith("DP"))
    names = list(next(iter(table.values()))) if table else []
    lines = ["## Measured (this harness)", "",
             f"Protection = mean unauthorized accuracy <= chance ({chance:g}%) + {margin:g} points, computed.", "",
             "| | " + " | ".join(order) + " |", "|---" * (len(order) + 1) + "|"]
    lines += ["| " + name + " | " + " | ".join(_fmt(table[c][name]) for c in order) + " |" for name in names]
    lines += ["", "## Reported (copied from papers, not measured here)", "",
              "| dataset | model | method | value | source |", "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['model']} | {r['method']} | {r['value']} | {r['source']} |" for r in REPORTED]
    lines += [""] + [f"- {k}: {v}" for k, v in REPORTED_NOTES.items()]
    return "\n".join(lines) + "\n"
