"""Suites that are not image classification: GLUE (bench.text) and MMBench (bench.vlm).

`authbench run` sends a suite here when its [data] dataset is one of TASK_DATASETS; each has
its own small job runner writing bench.results rows, and Table 7 / Table 4 renderers.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import UserError

TASK_DATASETS = ("glue", "mmbench")


def task_runner(suite, out: Path, models=None, cache_dir=None, progress=True):
    dataset = suite.data.get("dataset")
    if dataset == "glue":
        from bench.text.runner import TextRunner

        return TextRunner(suite, out, models=models, cache_dir=cache_dir, progress=progress)
    if dataset == "mmbench":
        from bench.vlm.runner import VLMRunner

        return VLMRunner(suite, out, models=models, cache_dir=cache_dir, progress=progress)
    raise UserError(f"dataset {dataset!r} has no task runner; valid choices: {', '.join(TASK_DATASETS)}")


def run_task_suite(suite, out: Path, args) -> int:
    """`authbench run` for a GLUE or MMBench suite: run missing cells, render Table 7 / Table 4, print a summary."""
    from bench.reports import render_all
    from bench.results import read_rows

    unsupported = [flag for flag, value in (("--defense", args.defense), ("--psnr", args.psnr),
                                            ("--release", args.release)) if value]
    if unsupported:
        raise UserError(f"{unsupported[0]} does not apply to {suite.data['dataset']} suites; use --model to pick models")
    summary = task_runner(suite, out, args.model, args.cache_dir, not args.no_progress).run()
    paths = render_all(read_rows(summary.results), args.reports or Path("reports") / suite.name, suite.report)
    for path in paths:
        if path.suffix == ".md":
            print(path.read_text())
    print(f"cells: {summary.cells_total} total, {summary.cells_done_before} already done, {summary.cells_run} run | "
          f"model calls: {summary.forwards} | cache hits {summary.cache['hits']}, misses {summary.cache['misses']} | "
          f"{summary.wall_s:.1f}s")
    print(f"results: {summary.results}\nreports: {paths[0].parent if paths else '-'}")
    return 0
