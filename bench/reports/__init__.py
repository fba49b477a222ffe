"""Reports from result rows: paper-shaped tables, the leaderboard and figures, all measured."""

from __future__ import annotations

from pathlib import Path

from bench.reports.figures import render_figures
from bench.reports.leaderboard import leaderboard, write_leaderboard
from bench.reports.tables import provenance_of, render_tables


def render_all(rows: list[dict], out_dir: Path, report: dict) -> list[Path]:
    """Write tables, leaderboard and figures into `out_dir`; returns the paths written.
    report: {"psnr": [...], "release": [...]}; a missing key means every value present in the
    protected rows."""
    protected = [r for r in rows if r["defense"] != "none"]
    present_psnr = sorted({float(r["point"]["psnr"]) for r in protected
                           if (r.get("point") or {}).get("psnr") is not None}, reverse=True)
    psnrs = [float(p) for p in report.get("psnr", present_psnr)]
    releases = list(report.get("release", dict.fromkeys(r["release"] for r in protected)))
    paths = render_tables(rows, out_dir, psnrs, releases)
    paths += write_leaderboard(leaderboard(rows), out_dir, provenance_of(rows))
    paths += render_figures(rows, out_dir, releases)
    return paths
