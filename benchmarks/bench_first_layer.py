"""The first-layer deviation's share of a grid job: the clean side recomputed in every job vs once per split.

A cold run (empty forward/encoding cache) of a small grid of the digits suite, in this process: every
zoo model evaluated, `--authorized` models authorized, ne-patch at each --psnr point, float release. The
CPU time spent in `FirstLayerDeviation.__call__` (the whole deviation: geometry, numerator, and the clean
norm when it is computed) is timed in place and divided by the run's CPU time (thread time, one torch
thread). Two modes, alternated in pairs with the order flipped each repeat:

  recompute:  the old behaviour (`classify.clean_norms` disabled: ||L(clean)|| computed in every job)
  reuse:      the clean norms computed once per model and split, reused by every later job

Both modes must give the same first-layer deviations (checked, bit for bit, as JSON text).

    PYTHONPATH=. python benchmarks/bench_first_layer.py [--repeats 2] [--psnr 20 --psnr 0 --psnr -10] [--authorized cnn-s0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core.context import RunOptions  # noqa: E402
from bench.core.engine import Engine  # noqa: E402
from bench.protocols import classify  # noqa: E402
from bench.results import read_rows  # noqa: E402
from bench.suite import load_suite  # noqa: E402

ORIGINAL_CLEAN_NORMS = classify.clean_norms
ORIGINAL_CALL = classify.FirstLayerDeviation.__call__
SPENT = [0.0]


def timed_call(self, *args, **kwargs):
    start = time.thread_time()
    try:
        return ORIGINAL_CALL(self, *args, **kwargs)
    finally:
        SPENT[0] += time.thread_time() - start


def run(suite, options: RunOptions, out: Path, reuse: bool) -> tuple[float, float, dict]:
    classify.clean_norms = ORIGINAL_CLEAN_NORMS if reuse else (lambda ctx, model, clean: None)
    SPENT[0] = 0.0
    start = time.thread_time()
    summary = Engine(suite, out, options).run()
    cpu = time.thread_time() - start
    devs = {r["cell"]: json.dumps(r["metrics"].get("first_layer_dev")) for r in read_rows(summary.results)}
    return cpu, SPENT[0], devs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--psnr", type=float, action="append", help="PSNR points (default 20, 0, -10)")
    parser.add_argument("--authorized", action="append", help="authorized models (default cnn-s0)")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    suite = load_suite("digits")
    classify.FirstLayerDeviation.__call__ = timed_call
    print(f"load: {os.getloadavg()}")
    results = {"recompute": [], "reuse": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = None
        for i in range(args.repeats):
            order = ("recompute", "reuse") if i % 2 == 0 else ("reuse", "recompute")
            for mode in order:
                options = RunOptions(defenses=("ne-patch",), psnr=tuple(args.psnr or (20.0, 0.0, -10.0)),
                                     releases=("float",), authorized=tuple(args.authorized or ("cnn-s0",)),
                                     cache_dir=tmp / f"cache-{mode}-{i}", progress=False, threads=1,
                                     batch_size=args.batch_size)
                cpu, dev, devs = run(suite, options, tmp / f"run-{mode}-{i}", mode == "reuse")
                if reference is None:
                    reference = devs
                assert devs == reference, "first-layer deviations differ between the modes"
                results[mode].append((cpu, dev))
                print(f"repeat {i} {mode:<9}: run CPU {cpu:6.2f} s, deviation {dev:5.2f} s, share {dev / cpu:.3f}")
    print(f"load: {os.getloadavg()}")
    for mode, pairs in results.items():
        share = statistics.median(d / c for c, d in pairs)
        print(f"{mode:<9}: median run CPU {statistics.median(c for c, _ in pairs):.2f} s, deviation "
              f"{statistics.median(d for _, d in pairs):.2f} s, share {share:.3f}")
    ratio = [r[1] / o[1] for r, o in zip(results["reuse"], results["recompute"])]
    print(f"deviation time reuse / recompute per pair: {', '.join(f'{x:.3f}' for x in ratio)}; "
          f"deviations identical in every run ({len(reference)} cells)")


if __name__ == "__main__":
    main()
