"""Reports from result rows: paper-shaped tables, the leaderboard and figures, all measured."""

from __future__ import annotations

from pathlib import Path

from bench.reports.corelocker import render_corelocker
from bench.reports.figures import render_figures
from bench.reports.leaderboard import leaderboard, write_leaderboard
from bench.reports.ne_attacks import render_attacks
from bench.reports.ne_reported import render_comparison
from bench.reports.tables import provenance_of, render_tables
from baselines import BUILTIN as BASELINES
from baselines.report import render_markdown


def render_all(rows: list[dict], out_dir: Path, report: dict) -> list[Path]:
    """Write tables, leaderboard and figures into `out_dir`; returns the paths written.
    report: {"psnr": [...], "release": [...]}; a missing key means every value present in the
    protected rows."""
    if any(r.get("benchmark") for r in rows):  # GLUE / MMBench suites: NE Tables 7 and 4
        from bench.reports.ne_tasks import render_task_tables

        return render_task_tables(rows, out_dir, report)
    verify = [r for r in rows if r["release"] == "verify"]  # ownership verification: bench.reports.fingerprint
    rows = [r for r in rows if r["release"] != "verify"]
    data_rows = [r for r in rows if r["release"] != "model"]  # input defenses and the clean baseline
    protected = [r for r in data_rows if r["defense"] != "none"]
    present_psnr = sorted({float(r["point"]["psnr"]) for r in protected
                           if (r.get("point") or {}).get("psnr") is not None}, reverse=True)
    psnrs = [float(p) for p in report.get("psnr", present_psnr)]
    releases = list(report.get("release", dict.fromkeys(r["release"] for r in protected)))
    paths = render_tables(data_rows, out_dir, psnrs, releases) if protected else []
    paths += write_leaderboard(leaderboard(rows), out_dir, provenance_of(rows))
    paths += render_figures(data_rows, out_dir, releases) if protected else []
    paths += render_attacks(data_rows, out_dir) if protected else []
    paths += render_comparison(data_rows, out_dir, report) if protected else []
    if any(r["defense"] == "corelocker" for r in rows):
        paths += render_corelocker(rows, out_dir)
    if any(r["defense"] in BASELINES for r in rows):
        path = Path(out_dir) / "table3_baselines.md"
        path.write_text(render_markdown(rows, **report.get("table3", {})))  # [report] table3 = {ne, psnr, release}
        paths.append(path)
    if verify:
        from bench.reports.fingerprint import render_fingerprint

        paths += render_fingerprint(verify, out_dir)
    return paths
