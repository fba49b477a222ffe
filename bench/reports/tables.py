"""Paper-shaped tables (NE Tables 1 and 2) from result rows, measured by this harness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.defenses import get_defense
from bench.core.errors import UserError

BASELINE = "Baseline (clean)"
PSNR_COL = "PSNR (dB)"
NOMINAL_COL = "paper-nominal PSNR (dB)"
DEV_COL = "auth. first-layer dev."
# what DEV_COL measures (every image table that shows it states it)
DEV_DEFINITION = ("first-layer dev. = mean over samples of ||L(x~) - L(x)|| / ||L(x)||, the relative change of the "
                  "model's first layer's actual output L (weights and bias, on its own normalised input (x - mean) / std) "
                  "between released x~ and clean x")
MISSING = "–"
_POINT_FIELDS = ("psnr", "psnr_mode")
_SECTION = ["defense", "params", "psnr", "psnr_mode", "release"]


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (str, int, bool)) or v is None:
        return str(v)
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def compact_params(params: dict, point: dict, defaults: dict | None = None) -> str:
    """`k=v,...` of the defense parameters that differ from its defaults, with swept values
    from `point` overriding them; psnr and psnr_mode are left out (they have their own columns)."""
    merged = {**(params or {}), **(point or {})}
    defaults = defaults or {}
    shown = [k for k in sorted(merged) if k not in _POINT_FIELDS and not (k in defaults and defaults[k] == merged[k])]
    return ",".join(f"{k}={_fmt_value(merged[k])}" for k in shown) or "defaults"


def registered_defaults(defense: str) -> dict:
    """The defense's default parameters when it is installed here (else nothing is elided)."""
    try:
        return dict(get_defense(defense).defaults)
    except UserError:
        return {}


def _num(v) -> float:
    return float(v) if v is not None else math.nan


def _own_label(row: dict) -> str:
    """The label a defense gives a row itself (e.g. MFUE's code schedule), "" where it is its plain name."""
    from bench.reports.boards import row_name
    name = row_name(row["defense"], row.get("params") or {}, row.get("point") or {})
    return "" if name == row["defense"] else name


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """Flatten result rows into one DataFrame row per cell (the columns reports use)."""
    records = []
    for r in rows:
        point, enc, metrics = r.get("point") or {}, r.get("encoding") or {}, r.get("metrics") or {}
        cost = r.get("cost") or {}
        records.append({
            "defense": r["defense"],
            "label": r.get("label") or _own_label(r),
            "params": compact_params(r.get("params") or {}, point, registered_defaults(r["defense"])),
            "psnr": _num(point.get("psnr")),
            "psnr_mode": point.get("psnr_mode") or "",
            "release": r["release"],
            "attack": r["attack"],
            "authorized": r["authorized"],
            "evaluated": r["evaluated"],
            "role": r["role"],
            "arch_authorized": (r.get("arch") or {}).get("authorized", ""),
            "arch_evaluated": (r.get("arch") or {}).get("evaluated", ""),
            "top1": _num(metrics.get("top1")),
            "first_layer_dev": _num(metrics.get("first_layer_dev")),
            "psnr_true": _num(enc.get("psnr_true")),
            "psnr_nominal": _num(enc.get("psnr_nominal")),
            "psnr_achieved": _num(metrics.get("psnr_achieved", enc.get(
                "psnr_nominal" if point.get("psnr_mode") == "paper-nominal" else "psnr_true"))),
            "target_reached": bool(metrics.get("target_reached", not enc.get("unreachable"))),
            "encode_ms": _num(enc.get("encode_ms")),
            "attack_psnr": _num((r.get("attack_stats") or {}).get("psnr")),
            "artifact_bytes": _num(cost.get("key_bytes", cost.get("artifact_bytes"))),
            "protect_ms": _num(cost.get("protect_ms")),
        })
    columns = ["defense", "label", "params", "psnr", "psnr_mode", "release", "attack", "authorized", "evaluated",
               "role", "arch_authorized", "arch_evaluated", "top1", "first_layer_dev", "psnr_true", "psnr_nominal", "psnr_achieved", "target_reached", "encode_ms", "attack_psnr", "artifact_bytes", "protect_ms"]
    return pd.DataFrame.from_records(records, columns=columns)


def clean_top1(frame: pd.DataFrame, attack: str = "none") -> pd.Series:
    """Clean (defense "none") top1 per evaluated model, under `attack` when such rows exist,
    else without attack."""
    clean = frame[frame["defense"] == "none"]
    if attack != "none" and (clean["attack"] == attack).any():
        clean = clean[clean["attack"] == attack]
    else:
        clean = clean[clean["attack"] == "none"]
    return clean.groupby("evaluated", sort=False)["top1"].mean()


def _select(rows, defense, psnr, release, attack, psnr_mode, params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all rows as a frame, the protected rows of one section); rejects ambiguous selections."""
    frame = results_frame(rows)
    sel = frame[(frame["defense"] == defense) & (frame["release"] == release) & (frame["attack"] == attack)
                & np.isclose(frame["psnr"], psnr)]
    if psnr_mode is not None:
        sel = sel[sel["psnr_mode"] == psnr_mode]
    if params is not None:
        sel = sel[sel["params"] == params]
    if sel.empty:
        raise UserError(f"no result rows for defense {defense!r} at psnr {psnr:g} dB, release {release!r}, "
                        f"attack {attack!r}; check the suite's defenses, psnr points and releases")
    for column in ("psnr_mode", "params"):
        if sel[column].nunique() > 1:
            values = ", ".join(repr(v) for v in sorted(sel[column].unique()))
            raise UserError(f"rows for defense {defense!r} differ in {column} ({values}); pass {column}= to pick one")
    return frame, sel


def _pivot(sel: pd.DataFrame, index: list[str], columns: list[str]) -> pd.DataFrame:
    return sel.pivot_table(index="authorized", columns="evaluated", values="top1", aggfunc="mean") \
        .reindex(index=index, columns=columns)


def cross_model_matrix(rows: list[dict], defense: str, psnr: float, release: str, attack: str = "none",
                       psnr_mode: str | None = None, params: str | None = None) -> pd.DataFrame:
    """NE Table 1: rows = authorized model (after a clean baseline row), columns = evaluated model,
    cells = top1 (%); plus achieved PSNR and the authorized cell's first-layer deviation."""
    frame, sel = _select(rows, defense, psnr, release, attack, psnr_mode, params)
    authorized = list(dict.fromkeys(sel["authorized"]))
    evaluated = list(dict.fromkeys(sel["evaluated"]))
    table = _pivot(sel, authorized, evaluated)
    own = sel[sel["role"] == "authorized"].groupby("authorized")
    table[PSNR_COL] = own["psnr_true"].mean()
    if sel["psnr_nominal"].notna().any():
        table[NOMINAL_COL] = own["psnr_nominal"].mean()
    table[DEV_COL] = own["first_layer_dev"].mean()
    baseline = clean_top1(frame, attack).reindex(evaluated).rename(BASELINE).to_frame().T
    table = pd.concat([baseline, table]).reindex(columns=table.columns)
    table.index.name = "authorized \\ evaluated"
    return table


def _arch_models(sel: pd.DataFrame) -> list[tuple[str | None, list[str]]]:
    """Per architecture (those with other-weights variants first, else in order of appearance):
    its authorized model (first by label) and its other-weights variants (sorted by label)."""
    out = []
    for arch in dict.fromkeys(sel["arch_evaluated"]):
        auth = sorted(set(sel.loc[sel["arch_authorized"] == arch, "authorized"]))
        models = sorted(set(sel.loc[sel["arch_evaluated"] == arch, "evaluated"]))
        rep = auth[0] if auth else None
        out.append((rep, [m for m in models if m != rep]))
    return sorted(out, key=lambda group: not group[1])


def same_arch_matrix(rows: list[dict], defense: str, psnr: float, release: str, attack: str = "none",
                     psnr_mode: str | None = None, params: str | None = None) -> pd.DataFrame:
    """NE Table 2: one row per architecture (its first authorized model by label), columns = the
    other-weights variants of every architecture; the diagonal blocks are same architecture,
    other weights, the rest is cross-architecture."""
    _, sel = _select(rows, defense, psnr, release, attack, psnr_mode, params)
    groups = _arch_models(sel)
    index = [rep for rep, _ in groups if rep is not None]
    columns = [m for _, variants in groups for m in variants]
    table = _pivot(sel, index, columns)
    table.index.name = "authorized \\ other weights"
    return table


def separation_summary(rows: list[dict], defense: str, psnr: float, release: str, attack: str = "none",
                       psnr_mode: str | None = None, params: str | None = None) -> pd.DataFrame:
    """Per authorized model: own top1, mean top1 of same-architecture/other-weights models, and
    mean and max top1 of other-architecture models."""
    _, sel = _select(rows, defense, psnr, release, attack, psnr_mode, params)

    def by(role):
        return sel[sel["role"] == role].groupby("authorized", sort=False)["top1"]

    summary = pd.DataFrame({
        "own": by("authorized").mean(),
        "same-arch mean": by("same-arch").mean(),
        "other-arch mean": by("unauthorized").mean(),
        "other-arch max": by("unauthorized").max(),
    })
    summary = summary.reindex(list(dict.fromkeys(sel["authorized"])))
    summary.index.name = "authorized"
    return summary


def provenance_of(rows: list[dict]) -> dict:
    """Suite, suite digest, git revision and versions of the first row; suite and git list every
    distinct value when the rows come from more than one."""
    if not rows:
        return {"suite": "", "suite_digest": "", "git": "", "versions": {}}
    first, prov = rows[0], rows[0].get("provenance") or {}
    suites = list(dict.fromkeys(str(r.get("suite", "")) for r in rows))
    gits = list(dict.fromkeys(str((r.get("provenance") or {}).get("git", "")) for r in rows))
    return {"suite": ", ".join(suites), "suite_digest": first.get("suite_digest", ""),
            "git": ", ".join(gits) if len(gits) > 1 else str(prov.get("git", "")),
            "versions": prov.get("versions") or {}}


def measured_line(provenance: dict) -> str:
    """The first line of every generated report: where its numbers come from."""
    return (f"Measured by authbench (suite `{provenance.get('suite', '')}`, "
            f"suite digest `{provenance.get('suite_digest', '')}`, git `{provenance.get('git', '')}`); "
            "no figure here is reported by a paper.")


PROVENANCE_SUFFIX = ".provenance.json"


def sidecar_path(csv_path: Path) -> Path:
    """Where the provenance of a CSV lives: `<name>.provenance.json` beside `<name>.csv`."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + PROVENANCE_SUFFIX)


def write_csv(frame: pd.DataFrame, path: Path, provenance: dict, note: str | None = None,
              extra: dict | None = None) -> list[Path]:
    """Write `frame` as a standard CSV (one header row, no comment lines, so `pandas.read_csv` reads
    it to the frame's shape) and its provenance to the sidecar `<name>.provenance.json` (with `extra`,
    e.g. a board's key and title); returns both."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    side = sidecar_path(path)
    payload = {"kind": "authbench-provenance", "version": 1, "file": path.name,
               "note": note if note is not None else measured_line(provenance), "provenance": provenance,
               **(extra or {})}
    side.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return [path, side]


def format_cell(value, decimals: int = 1) -> str:
    """One number as report text; a missing cell reads as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{decimals}f}"


def to_markdown(table: pd.DataFrame, decimals: dict[str, int] | None = None, index: bool = True) -> str:
    """Markdown of a numeric table: one decimal unless `decimals` names the column."""
    decimals = decimals or {}
    text = table.copy().astype(object)
    align = ["left"] if index else []
    for column in table.columns:
        numeric = pd.api.types.is_numeric_dtype(table[column])
        if numeric:
            text[column] = [format_cell(v, decimals.get(column, 1)) for v in table[column]]
        align.append("right" if numeric else "left")
    return text.to_markdown(index=index, disable_numparse=True, colalign=align)


def _sections(frame: pd.DataFrame, psnrs, releases):
    """(defense, params, psnr_mode, psnr, release) for every protected section present."""
    protected = frame[(frame["defense"] != "none") & (frame["attack"] == "none")]
    keys = protected[["defense", "params", "psnr_mode"]].drop_duplicates().itertuples(index=False)
    for defense, params, mode in keys:
        for release in releases:
            for psnr in psnrs:
                part = protected[(protected["defense"] == defense) & (protected["params"] == params)
                                 & (protected["psnr_mode"] == mode) & (protected["release"] == release)
                                 & np.isclose(protected["psnr"], psnr)]
                if not part.empty:
                    yield defense, params, mode, psnr, release


def psnr_label(target: float, cells: pd.DataFrame | None = None) -> str:
    """'20 dB', or '0 dB (achieved 5.1)' where the release of `cells` (one section's rows) did not reach the
    target: a clipped or 8-bit release cannot go below its saturated image's PSNR (bench.defenses.release)."""
    text = f"{target:g} dB"
    if cells is None or cells.empty or bool(cells["target_reached"].all()):
        return text
    achieved = cells["psnr_achieved"].mean()
    return f"{text} (achieved {achieved:.1f})" if not math.isnan(achieved) else f"{text} (not reached)"


def _heading(defense, params, mode, psnr, release, cells: pd.DataFrame | None = None) -> str:
    labels = sorted({v for v in cells["label"] if v}) if cells is not None and "label" in cells else []
    defense = defense + "".join(f" [{v}]" for v in labels)  # the suite entry's label, where it has one
    extra = f", {params}" if params else ""
    mode = f" (psnr_mode {mode})" if mode else ""
    return f"## {defense}{extra}: target PSNR {psnr_label(psnr, cells)}{mode}, release {release}"


def render_tables(rows: list[dict], out_dir: Path, psnrs: list[float], releases: list[str]) -> list[Path]:
    """Write table1_cross_model.{md,csv} and table2_same_arch.{md,csv}: one section per protected
    defense x psnr x release (no attack)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = results_frame(rows)
    head = measured_line(provenance_of(rows))
    t1 = [f"{head}\n\n# Table 1 (NE shape): cross-model top-1 accuracy (%) on encoded inputs\n\n"
          "Rows: the authorized model the data was encoded for; columns: the evaluated model. "
          f"{PSNR_COL}: achieved on the authorized model's release (a target the release cannot reach is "
          f"headed 'target (achieved ...)'); {DEV_DEFINITION}."]
    t2 = [f"{head}\n\n# Table 2 (NE shape): same architecture, other weights: top-1 accuracy (%)\n\n"
          "Rows: the authorized model of each architecture; columns: models of the same architectures "
          "with other weights. Same-architecture cells are the diagonal blocks; the rest is cross-architecture."]
    csv1, csv2 = [], []
    for defense, params, mode, psnr, release in _sections(frame, psnrs, releases):
        args = dict(defense=defense, psnr=psnr, release=release, psnr_mode=mode, params=params)
        _, sel = _select(rows, defense, psnr, release, "none", mode, params)
        heading = _heading(defense, params, mode, psnr, release, sel[sel["role"] == "authorized"])
        section = dict(zip(_SECTION, (defense, params, psnr, mode, release)))
        m1 = cross_model_matrix(rows, **args)
        t1.append(f"{heading}\n\n{to_markdown(m1, {DEV_COL: 3})}")
        csv1.append(m1.reset_index().rename(columns={m1.index.name: "authorized"}).assign(**section))
        m2, summary = same_arch_matrix(rows, **args), separation_summary(rows, **args)
        t2.append(f"{heading}\n\n{to_markdown(m2)}\n\n{to_markdown(summary)}")
        csv2.append(m2.reset_index().rename(columns={m2.index.name: "authorized"}).assign(**section))
    paths = []
    for name, parts, frames in (("table1_cross_model", t1, csv1), ("table2_same_arch", t2, csv2)):
        md = out_dir / f"{name}.md"
        md.write_text("\n\n".join(parts) + "\n")
        body = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_SECTION)
        body = body[_SECTION + [c for c in body.columns if c not in _SECTION]]
        paths += [md, *write_csv(body, out_dir / f"{name}.csv", provenance_of(rows), head)]
    return paths
