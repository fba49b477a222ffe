"""A warm rerun that does nothing costs little: reports are rendered again only when their inputs changed."""

from __future__ import annotations

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
