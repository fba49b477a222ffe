"""Cold vs warm suite time, measured in one run and printed as ratios.

cold:        empty forward/encoding cache (zoo weights reused, so training is not counted)
warm-cache:  a new results folder, warm cache: every forward pass and encoding is a cache hit
warm-rerun:  the same results folder again: every cell is already done

    python benchmarks/bench_suite_warm.py [--suite digits] [--psnr 20 --psnr 0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.cache import cache_root
from bench.runner import Runner
from bench.suite import load_suite


def timed(suite, out: Path, cache: Path, psnr) -> tuple[float, int]:
    start = time.perf_counter()
    summary = Runner(suite, out, cache_dir=cache, psnr=psnr, progress=False).run()
    return time.perf_counter() - start, summary.forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="digits")
    parser.add_argument("--psnr", type=float, action="append", help="restrict to these points (default: all)")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        if (cache_root() / "zoo").exists():
            shutil.copytree(cache_root() / "zoo", cache / "zoo")
        cold, cold_fw = timed(suite, tmp / "a", cache, args.psnr)
        warm, warm_fw = timed(suite, tmp / "b", cache, args.psnr)
        rerun, rerun_fw = timed(suite, tmp / "b", cache, args.psnr)
    print(f"suite {suite.name}: cold {cold:.1f}s ({cold_fw} forward passes)")
    print(f"warm cache, new folder: {warm:.2f}s ({warm_fw} forward passes)  ratio warm/cold = {warm / cold:.3f}")
    print(f"warm rerun, same folder: {rerun:.2f}s ({rerun_fw} forward passes)  ratio rerun/cold = {rerun / cold:.4f}")


if __name__ == "__main__":
    main()
