"""Reports from result rows: paper-shaped tables, the leaderboard and figures, all measured."""

from __future__ import annotations

from pathlib import Path

from bench.reports.corelocker import render_corelocker
from bench.reports.figures import render_figures
from bench.reports.leaderboard import leaderboard, write_leaderboard
from bench.reports.tables import provenance_of, render_tables
from baselines import BUILTIN as BASELINES
from baselines.report import render_markdown


def render_all(rows: list[dict], out_dir: Path, report: dict) -> list[Path]:
    """Write tables, leaderboard and figures into `out_dir`; returns the paths written.
    report: {"psnr": [...], "release": [...]}; a missing key means every value present in the
    protected rows."""
    data_rows = [r for r in rows if r["release"] != "model"]  # input defenses and the clean baseline
    protected = [r for r in data_rows if r["defense"] != "none"]
    present_psnr = sorted({float(r["point"]["psnr"]) for r in protected
                           if (r.get("point") or {}).get("psnr") is not None}, reverse=True)
    psnrs = [float(p) for p in report.get("psnr", present_psnr)]
    releases = list(report.get("release", dict.fromkeys(r["release"] for r in protected)))
    paths = render_tables(data_rows, out_dir, psnrs, releases) if protected else []
    paths += write_leaderboard(leaderboard(rows), out_dir, provenance_of(rows))
    paths += render_figures(data_rows, out_dir, releases) if protected else []
    if any(r["defense"] == "corelocker" for r in rows):
        paths += render_corelocker(rows, out_dir)
    if any(r["defense"] in BASELINES for r in rows):
        path = Path(out_dir) / "table3_baselines.md"
        path.write_text(render_markdown([r for r in rows if r["attack"] == "none"]))
        paths.append(path)
    return paths
