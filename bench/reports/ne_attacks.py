"""Attack reports for input-authorization defenses: preprocessing robustness, reconstruction
(NE Table 8), learned adaptation (NE Table 9) and the method-aware projection.

Every cell is measured: accuracies are mean top-1 (%) over authorized models (own accuracy) or
over every other model (unauthorized; same architecture included), "restored" is how many points
the attack gives back to unauthorized models compared with the released data unattacked.
The paper's own Tables 8 and 9 follow in a labelled `reported` section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.attacks import ATTACKS
from bench.reports.ne_reported import CITATION, reported_table
from bench.reports.tables import measured_line, provenance_of, psnr_label, results_frame, to_markdown, write_csv

SECTIONS = {  # kind of attack -> (heading, note)
    "input": ("Preprocessing robustness", "fixed transforms of the released data (NE Section 5.3)"),
    "reconstruct": ("Reconstruction (NE Table 8 shape)",
                    "a denoiser trained on the attacker's released data; PSNR against the clean images"),
    "project": ("Method-aware projection (NE Appendix E; no paper measures it)",
                "the estimated recoding subspace replaced by the attacker's fill"),
    "adapt": ("Learned adaptation (NE Table 9 shape)", "unauthorized models fine-tuned on (released, label) pairs"),
}
KEYS = ["defense", "params", "psnr", "release"]


def attack_name(label: str) -> str:
    return label.split("(", 1)[0]


def _section(label: str) -> str | None:
    name = attack_name(label)
    if name in ("reconstruct", "project", "adapt"):
        return name
    cls = ATTACKS.get(name) if name in ATTACKS else None
    return "input" if cls is None or cls.kind == "input" else None


def attack_summary(rows: list[dict]) -> pd.DataFrame:
    """One row per attacked (defense, params, psnr, release, attack) of input-authorization cells, beside
    the same cells unattacked (the same authorized models, so `restored` compares like with like)."""
    frame = results_frame(rows)
    frame = frame[(frame["defense"] != "none") & frame["role"].isin(["authorized", "same-arch", "unauthorized"])
                  & frame["psnr"].notna()]
    unattacked = frame[frame["attack"] == "none"]
    records = []
    for key, cells in frame[frame["attack"] != "none"].groupby([*KEYS, "attack"], sort=False, dropna=False):
        models = sorted(set(cells["authorized"]))
        base = unattacked[unattacked["authorized"].isin(models)]
        for k, v in zip(KEYS, key):
            base = base[base[k] == v]
        own, others = cells[cells["role"] == "authorized"], cells[cells["role"] != "authorized"]
        base_others = base[base["role"] != "authorized"]["top1"]
        records.append({**dict(zip([*KEYS, "attack"], key)), "section": _section(key[-1]),
                        "authorized models": ", ".join(models),
                        "psnr label": psnr_label(key[2], own),
                        "psnr released": own["psnr_true"].mean(),
                        "psnr attacked": own["attack_psnr"].mean() if own["attack_psnr"].notna().any() else np.nan,
                        "authorized released": base[base["role"] == "authorized"]["top1"].mean(),
                        "authorized": own["top1"].mean(),
                        "unauthorized released": base_others.mean(),
                        "unauthorized mean": others["top1"].mean(), "unauthorized max": others["top1"].max(),
                        "restored": others["top1"].mean() - base_others.mean()})
    return pd.DataFrame.from_records(records)


def adaptation_table(rows: list[dict]) -> pd.DataFrame:
    """Per (defense, psnr, release, attack, authorized, evaluated): top-1 on the released data before
    and after the adaptation attack."""
    frame = results_frame(rows)
    frame = frame[(frame["defense"] != "none") & frame["psnr"].notna()]
    keys = [*KEYS, "authorized", "evaluated"]
    before = frame[frame["attack"] == "none"].groupby(keys, dropna=False)["top1"].mean()
    adapted = frame[frame["attack"].map(attack_name) == "adapt"]
    records = [{**dict(zip(keys, key)), "attack": attack, "role": role, "before": before.get(key, np.nan), "after": top1}
               for (*key, attack, role), top1 in adapted.groupby([*keys, "attack", "role"], dropna=False)["top1"].mean().items()
               for key in [tuple(key)]]
    table = pd.DataFrame.from_records(records)
    if not table.empty:
        table["restored"] = table["after"] - table["before"]
    return table


def _reported_section() -> str:
    parts = ["## Reported by the NE paper (kind `reported`; not measured here)\n"]
    for table, dataset, note in ((8, "VDSR", "PSNR (dB) of released and SR-ResNet reconstructions"),
                                 (9, "CIFAR-10", "top-1 (%) on NEs after 3 epochs of full fine-tuning")):
        parts.append(f"Table {table} ({dataset}; {note}; cite: {CITATION}, Table {table}, row, column):\n\n"
                     f"{to_markdown(reported_table(table, dataset))}\n")
    parts.append("Table 9's authorized ViT-B row (98.7) is not a row of the paper's Table 9: it is stated in the "
                 "table's caption and in Sec. 5.3.\n")
    return "\n".join(parts)


def render_attacks(rows: list[dict], out_dir: Path) -> list[Path]:
    """Write ne_attacks.md and ne_attacks.csv when any input-authorization cell ran an attack."""
    summary = attack_summary(rows)
    if summary.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [measured_line(provenance_of(rows)), "", "# Attacks on input authorization", "",
             "Mean top-1 (%) of the authorized models on their own released data and of every other model "
             "(unauthorized), after the attack and on the same released data unattacked (`... released`); "
             "`restored` = unauthorized mean after minus before the attack.", ""]
    columns = [*KEYS, "attack", "authorized models", "psnr released", "psnr attacked", "authorized released",
               "authorized", "unauthorized released", "unauthorized mean", "unauthorized max", "restored"]
    for section, (heading, note) in SECTIONS.items():
        part = summary[summary["section"] == section]
        if not part.empty:
            shown = part[columns].assign(psnr=part["psnr label"])  # "0 dB (achieved 5.1)" where not reached
            parts += [f"## {heading}", "", f"{note}.", "", to_markdown(shown, index=False), ""]
    adaptation = adaptation_table(rows)
    if not adaptation.empty:
        parts += ["## Adaptation per model", "", to_markdown(adaptation, index=False), ""]
    parts.append(_reported_section())
    md = out_dir / "ne_attacks.md"
    md.write_text("\n".join(parts))
    return [md, *write_csv(summary, out_dir / "ne_attacks.csv", provenance_of(rows))]
