"""A warm rerun that does nothing costs little: reports are rendered again only when their inputs changed."""

from __future__ import annotations

import pytest

import bench.api
from conftest import write_suite

from bench.api import RENDER_STAMP


def _counting_render(monkeypatch) -> list:
    calls = []
    original = bench.api.render

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bench.api, "render", counted)
    return calls


def test_reports_are_not_rendered_again_when_no_row_changed(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))
    calls = _counting_render(monkeypatch)
    kw = dict(out=tmp_path / "run", reports=tmp_path / "rep", threads=1)
    first = bench.evaluate(suite, psnr=[20.0], **kw)
    assert calls == [1] and (tmp_path / "rep" / RENDER_STAMP).is_file()
    again = bench.evaluate(suite, psnr=[20.0], **kw)
    assert calls == [1] and again.summary.cells_run == 0
    assert again.reports == first.reports and again.reports  # the same files, listed as before
    forced = bench.evaluate(suite, psnr=[20.0], rerender=True, **kw)  # authbench run --render
    assert len(calls) == 2 and forced.reports == first.reports
    first.reports[0].unlink()  # a report file gone: rendered again
    bench.evaluate(suite, psnr=[20.0], **kw)
    assert len(calls) == 3 and first.reports[0].exists()
    bench.evaluate(suite, psnr=[20.0], **{**kw, "reports": tmp_path / "other"})  # another folder: its own render
    assert len(calls) == 4
    with open(first.summary.results, "a") as f:  # rows changed (here: appended by hand)
        f.write(open(first.summary.results).readline())
    bench.evaluate(suite, psnr=[20.0], **kw)
    assert len(calls) == 5


# -- a fully-done rerun through the command line: no plan, no torch (bench.engine.rerun) ----------------

PROBE = ("import sys\nfrom bench.cli import main\ncode = main(sys.argv[1:])\n"
         "print('TORCH', 'torch' in sys.modules, 'numpy' in sys.modules)\nsys.exit(code)\n")


def _cli(args, cwd):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, cwd=cwd,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    torch_loaded = proc.stdout.strip().splitlines()[-1]
    return proc.stdout, proc.stderr, torch_loaded == "TORCH True True"


def _report_times(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_done_rerun_imports_no_torch_and_rewrites_no_report(tmp_path):
    from bench.engine.rerun import DONE_STAMP

    suite = write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))
    args = ["run", str(suite), "--out", str(tmp_path / "run"), "--threads", "1", "--no-progress"]
    assert _cli(args, tmp_path)[2]  # cold: the full path
    assert (tmp_path / "run" / DONE_STAMP).is_file()
    reports = _report_times(tmp_path / "run" / "reports")
    slow_out, _, _ = _cli([*args, "--render"], tmp_path)  # the full path, every report rendered again
    again = _report_times(tmp_path / "run" / "reports")
    assert again.keys() == reports.keys() and again != reports  # (the clock moved: rendering rewrites files)
    out, err, torch_loaded = _cli(args[:-1], tmp_path)
    assert not torch_loaded, "a fully-done rerun imported torch"
    assert "0 run | forward passes: 0" in out and "nothing to run" in err
    assert _report_times(tmp_path / "run" / "reports") == again  # no report rewritten
    strip = lambda text: [l for l in text.splitlines() if not l.startswith(("cells:", "TORCH"))]  # noqa: E731
    assert strip(out) == strip(slow_out)  # the same boards and paths as the full path prints


@pytest.mark.slow
def test_what_a_done_rerun_must_notice(tmp_path):
    suite = write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))
    args = ["run", str(suite), "--out", str(tmp_path / "run"), "--threads", "1", "--no-progress"]
    assert _cli(args, tmp_path)[2]
    assert not _cli(args, tmp_path)[2]
    assert _cli([*args, "--psnr", "20"], tmp_path)[2]  # another command line: the full path (then stamped)
    assert not _cli([*args, "--psnr", "20"], tmp_path)[2]
    suite.write_text(suite.read_text() + "\n# an edit\n")  # the suite file changed
    assert _cli(args, tmp_path)[2]
    assert not _cli(args, tmp_path)[2]
    results = tmp_path / "run" / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:-1]))  # a row gone: it runs again, on the full path
    out, _, torch_loaded = _cli(args, tmp_path)
    assert torch_loaded and "1 run" in out
    report = next((tmp_path / "run" / "reports").glob("*.md"))
    report.unlink()  # a report gone: rendered again
    assert _cli(args, tmp_path)[2] and report.exists()
    assert not _cli(args, tmp_path)[2]
