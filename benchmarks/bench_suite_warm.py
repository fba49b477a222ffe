"""Cold vs warm suite time, measured in one run and printed as ratios.

cold:        empty forward/encoding cache (zoo weights reused, so training is not counted)
warm-cache:  a new results folder, warm cache: every forward pass and encoding is a cache hit
warm-rerun:  the same results folder again: every cell is already done

Each is one `bench.core.engine.Engine(suite, out, RunOptions(...)).run()` in this process. By default the
digits suite's input defenses (ne-patch, ne-operator, noise) at --psnr 20 (about a minute cold here);
--defense and --psnr pick others, --all runs every entry of the suite at every point (minutes: CoreLocker,
its attacks and the baselines retrain models).

    PYTHONPATH=. python benchmarks/bench_suite_warm.py [--suite digits] [--psnr 20 --psnr 0] [--defense noise] [--all]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cache import cache_root  # noqa: E402
from bench.core.context import RunOptions  # noqa: E402
from bench.core.engine import Engine  # noqa: E402
from bench.suite import load_suite  # noqa: E402

DEFAULT_DEFENSES = ("ne-patch", "ne-operator", "noise")


def timed(suite, out: Path, options: RunOptions) -> tuple[float, object]:
    start = time.perf_counter()
    summary = Engine(suite, out, options).run()
    return time.perf_counter() - start, summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="digits")
    parser.add_argument("--psnr", type=float, action="append", help="only these points (default: 20; --all: every one)")
    parser.add_argument("--defense", action="append", help=f"only these entries (default: {', '.join(DEFAULT_DEFENSES)})")
    parser.add_argument("--all", action="store_true", help="every entry of the suite at every point")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the suite's, else 256)")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    names = {d.name for d in suite.defenses}
    defenses = () if args.all else tuple(args.defense or [d for d in DEFAULT_DEFENSES if d in names])
    psnr = () if args.all and not args.psnr else tuple(args.psnr or [20.0])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        if (cache_root() / "zoo").exists():
            shutil.copytree(cache_root() / "zoo", cache / "zoo")
        options = RunOptions(defenses=defenses, psnr=psnr, cache_dir=cache, progress=False, threads=args.threads,
                             batch_size=args.batch_size)
        cold, s_cold = timed(suite, tmp / "a", options)
        warm, s_warm = timed(suite, tmp / "b", options)
        rerun, s_rerun = timed(suite, tmp / "b", options)
    what = f"defenses {', '.join(defenses) or 'all'}; PSNR {', '.join(f'{p:g}' for p in psnr) or 'all'}"
    print(f"suite {suite.name} ({what}): {s_cold.cells_run} cells, {s_cold.jobs_run} jobs")
    print(f"cold: {cold:.1f}s ({s_cold.forwards} forward passes, {s_cold.encodings} encodings)")
    print(f"warm cache, new folder: {warm:.2f}s ({s_warm.forwards} forward passes, cache hits {s_warm.cache['hits']})  "
          f"ratio warm/cold = {warm / cold:.3f}")
    print(f"warm rerun, same folder: {rerun:.2f}s ({s_rerun.forwards} forward passes, {s_rerun.cells_run} cells run)  "
          f"ratio rerun/cold = {rerun / cold:.4f}")


if __name__ == "__main__":
    main()
